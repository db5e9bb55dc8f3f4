"""Stages 2-3 of the main job: the DSEC window datasets (split by sequence) and the frozen tower's features.

Two feature spaces, both from the same frozen tower:

* the token space (``features/<duration>/<split>``; every trained row, unaligned, reconstruction, rgb_reference):
  EventGPT's spatial tokens of the window's 5 event frames (the per-patch mean over the frames, penultimate layer,
  CLS dropped) against Video-LLaVA's image target (the RGB frame's patch tokens of the penultimate layer, CLS
  dropped), stored as tokens ``[N, patches, hidden]``. The adapters map them token by token (one map shared by
  every patch, as EventGPT's projector is applied); retrieval compares the flattened ``[N, patches * hidden]``
  tokens, whose layout strict window retrieval needs (a pooled embedding of one camera path barely changes from
  window to window);
* the embedding space (``features/<duration>/embed/<split>``; rgb_reference/embed, the ceiling of pooled
  embeddings): targets are the tower's ``image_embeds`` (post-layernorm + visual projection of the last layer's
  CLS), the space its text prompts share; event inputs are the same event tokens, flattened. triple_modal
  reaches that space through its text head (zero-shot classification).

Targets are the RGB frame nearest the window's END.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .config import PipelineConfig

EVENT_REPRESENTATIONS = ("eventgpt_frames",)  # every row reads EventGPT frames (contrastive_image: the last one)
TOKEN_SPACE = "tokens: EventGPT spatial patch tokens vs RGB patch tokens, [N, patches, hidden]"


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
    from ..features.towers import load_clip_vision_tower

    return load_clip_vision_tower(name_or_path, with_projection=with_projection, what="--clip")


TOKEN_LAYER = -2  # penultimate, as EventGPT's and Video-LLaVA's towers


@torch.inference_mode()
def project(tower, tokens: torch.Tensor) -> torch.Tensor:
    """Last-layer features ``[N, D]`` -> the image-embedding space ``[N, P]`` (post-layernorm + projection)."""
    return tower.visual_projection(tower.vision_model.post_layernorm(tokens.float())).float()


def extraction_options():
    from ..features.extraction import ExtractionOptions

    return ExtractionOptions(event_pooling="tokens", event_layer=TOKEN_LAYER, target_tokens="patch",
                             target_layer=TOKEN_LAYER)


def event_patch_tokens(tokens: torch.Tensor, num_patches: int) -> torch.Tensor:
    """EventGPT tokens ``[N, F+1+P, D]`` -> the spatial patch tokens ``[N, P, D]`` (no CLS, no temporal)."""
    return tokens[:, -num_patches:].float()


@torch.inference_mode()
def embed_images(tower, images) -> torch.Tensor:
    """The tower's ``image_embeds`` of RGB images (CLIP preprocessing as extraction applies it)."""
    from ..features.clip_preprocessing import clip_preprocess

    return tower(pixel_values=clip_preprocess(images, tower.config.image_size)).image_embeds.float()


def build_splits(cfg: PipelineConfig, tree: Path, duration: str, cache_dir: Path, representations=None) -> dict:
    """The demo's windows: the brief's script's stage 1 (``dsec_alignment.window_splits``), stratified by scene."""
    from .dsec_alignment import window_splits

    return window_splits(tree, duration, cache_dir, num_proc=cfg.num_proc if cfg.num_proc > 1 else None,
                         hint=f"val_fraction={cfg.val_fraction}, test_fraction={cfg.test_fraction}",
                         val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, stratify_by_scene=True,
                         representations=tuple(representations or EVENT_REPRESENTATIONS))


def extract_splits(splits: dict, out: Path, tower, provenance: dict | None = None) -> tuple[dict[str, Path], dict[str, Path]]:
    """Per split: raw tokens (resumable, ``out/raw/<split>``), then the token-space directory ``out/<split>``
    and the embedding-space directory ``out/embed/<split>``; returns both dicts of directories. ``provenance``
    (the tower and recordings the features came from) is kept in each directory's metadata for model cards."""
    import numpy as np

    from ..data.alignment_dataset import AlignmentDataset
    from ..features.extraction import extract_features

    dirs, embed_dirs = {}, {}
    for split, ds in splits.items():
        dirs[split], embed_dirs[split] = out / split, out / "embed" / split
        if _is_current(dirs[split]) and (embed_dirs[split] / "metadata.json").is_file():
            continue
        raw = out / "raw" / split
        extract_features(ds, raw, tower, options=extraction_options(), split=split,
                         batch_size=16)
        data = AlignmentDataset.from_directory(raw)
        num_patches = data.target_features.shape[1]
        events = event_patch_tokens(data.event_features, num_patches)
        meta = {"samples": data.samples_list(), "extraction": data.metadata.get("extraction"),
                "provenance": provenance or {}}
        AlignmentDataset(events, data.target_features.float(), {**meta, "space": TOKEN_SPACE}
                         ).save_to_directory(dirs[split])
        rgb = ds.select_columns(["rgb"])
        embeds = torch.cat([embed_images(tower, [np.asarray(im.convert("RGB")) for im in rgb[i : i + 64]["rgb"]])
                            for i in range(0, len(rgb), 64)])
        AlignmentDataset(events.flatten(1), embeds, {**meta, "space": "embedding: RGB image_embeds"}
                         ).save_to_directory(embed_dirs[split])
    return dirs, embed_dirs


def _is_current(folder: Path) -> bool:
    """A finished token-space directory of this layout (an older run's flattened features are re-derived)."""
    import json

    meta = folder / "metadata.json"
    return meta.is_file() and json.loads(meta.read_text()).get("space") == TOKEN_SPACE


def rgb_start_features(cfg: PipelineConfig, tree: Path, test, tower, space: str = "tokens") -> torch.Tensor:
    """rgb_reference queries: the tower's patch tokens (token space) of the RGB frame nearest each test window's
    START (the brief's single-RGB-image baseline, the ceiling event features chase); targets stay the END frames.
    ``space="embed"``: the frames' ``image_embeds`` instead (the ceiling of the embedding-space rows)."""
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
            if space == "embed":
                feats.append(embed_images(tower, images))
            else:
                feats.append(encode_targets(tower, images, options).flatten(1).float())
    return torch.cat(feats)
