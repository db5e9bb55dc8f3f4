"""Stages 2-3 of the main job: the DSEC window datasets (split by sequence) and the frozen tower's features.

Feature space: every row of the table lives in the tower's image-embedding space (CLIP's ``image_embeds``:
post-layernorm + visual projection of the last layer's CLS token), the space CLIP's text prompts, the
contrastive_image model and the rgb_reference query share. Extraction (``features.extraction``) keeps the last
layer's tokens; the projection head is applied here:

* event features: EventGPT pooling of the window's 5 event frames (the mean of its temporal and spatial rows,
  ``event_pooling="pooled"``), then the head;
* target features: the CLS token of the RGB frame nearest the window's END, then the head (= ``image_embeds``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .config import PipelineConfig

EVENT_REPRESENTATIONS = ("eventgpt_frames", "event_histogram")


def log(msg: str) -> None:
    print(f"[evalign] {msg}", flush=True)


def tower_path(cfg: PipelineConfig) -> str:
    """The CLIP checkpoint for both sides: ``cfg.clip`` or the proxy tower (built on first use)."""
    if cfg.clip:
        return cfg.clip
    from ..features.proxy_clip import ProxyClipConfig, ensure_proxy_clip

    return str(ensure_proxy_clip(cfg.proxy_cache_dir, ProxyClipConfig(**cfg.proxy_clip), log=log))


def load_vision_tower(name_or_path: str, with_projection: bool = True):
    """Frozen ``CLIPVisionModelWithProjection`` (or plain ``CLIPVisionModel``) from a repo id or directory (a
    full CLIP checkpoint's text weights are expected to be unused: no load report about them)."""
    from transformers import CLIPVisionModel, CLIPVisionModelWithProjection
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        cls = CLIPVisionModelWithProjection if with_projection else CLIPVisionModel
        model = cls.from_pretrained(name_or_path)
    finally:
        hf_logging.set_verbosity(verbosity)
    return model.eval().requires_grad_(False)


@torch.inference_mode()
def project(tower, tokens: torch.Tensor) -> torch.Tensor:
    """Last-layer features ``[N, D]`` -> the image-embedding space ``[N, P]`` (post-layernorm + projection)."""
    return tower.visual_projection(tower.vision_model.post_layernorm(tokens.float())).float()


def extraction_options():
    from ..features.extraction import ExtractionOptions

    return ExtractionOptions(event_pooling="pooled", event_layer=-1, target_tokens="cls", target_layer=-1)


def build_splits(cfg: PipelineConfig, tree: Path, duration: str, cache_dir: Path, representations=None) -> dict:
    from ..data.dsec_builder import DsecAlignmentBuilder

    builder = DsecAlignmentBuilder(
        config_name=duration, data_dir=str(tree), cache_dir=str(cache_dir), val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction, representations=tuple(representations or EVENT_REPRESENTATIONS),
    )
    builder.download_and_prepare(num_proc=cfg.num_proc if cfg.num_proc > 1 else None)
    return {split: builder.as_dataset(split=split) for split in builder.info.splits}


def extract_splits(splits: dict, out: Path, tower) -> dict[str, Path]:
    """Per split: raw last-layer features (resumable, ``out/raw/<split>``), then projected into
    ``out/<split>`` (the directories the strategies train and are evaluated on)."""
    from ..data.alignment_dataset import AlignmentDataset
    from ..features.extraction import extract_features

    dirs = {}
    for split, ds in splits.items():
        dirs[split] = out / split
        if (dirs[split] / "metadata.json").is_file():
            continue
        raw = out / "raw" / split
        cols = [c for c in ds.column_names if c != "event_histogram"]  # not needed here: skip decoding it
        extract_features(ds.select_columns(cols), raw, tower, options=extraction_options(), split=split,
                         batch_size=16)
        data = AlignmentDataset.from_directory(raw)
        meta = {"samples": data.samples_list(), "extraction": data.metadata.get("extraction"),
                "projection": "image_embeds = visual_projection(post_layernorm(last-layer feature))"}
        AlignmentDataset(project(tower, data.event_features), project(tower, data.target_features),
                         meta).save_to_directory(dirs[split])
    return dirs


def rgb_start_features(cfg: PipelineConfig, tree: Path, test, tower) -> torch.Tensor:
    """rgb_reference queries: the tower's embedding of the RGB frame nearest each test window's START (the
    brief's single-RGB-image baseline, the ceiling event features chase); targets stay the END frames."""
    import numpy as np
    from PIL import Image

    from ..data.windows import nearest_frame_index
    from ..events.dsec_format import IMAGE_NAME, IMAGES_DIR, TIMESTAMPS_FILE
    from ..features.extraction import encode_targets

    options = extraction_options()
    feats, stamps = [], {}
    rows = test.samples_list()
    for i in range(0, len(rows), 32):
        images = []
        for row in rows[i : i + 32]:
            seq = tree / row["sequence"]
            if seq not in stamps:
                stamps[seq] = np.loadtxt(seq / TIMESTAMPS_FILE, dtype=np.int64, ndmin=1)
            k = int(nearest_frame_index(stamps[seq], [row["window_start_us"]])[0])
            images.append(np.asarray(Image.open(seq / IMAGES_DIR / IMAGE_NAME.format(k)).convert("RGB")))
        with torch.inference_mode():
            feats.append(project(tower, encode_targets(tower, images, options)))
    return torch.cat(feats)
