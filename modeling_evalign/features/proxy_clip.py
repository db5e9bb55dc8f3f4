"""A proxy CLIP pretrained here: a small ``CLIPModel`` (vision + text tower) trained image-text contrastively on
the RGB frames the synthetic DSEC generator renders, since no real CLIP weights can be downloaded.

API (used by the main job and the strategy-map study)::

    from modeling_evalign.features.proxy_clip import ProxyClipConfig, ensure_proxy_clip, proxy_clip_dir

    path = ensure_proxy_clip()                    # builds on first use (~1-2 min on 2 cores), then reuses
    path = ensure_proxy_clip(cache_dir="/tmp/x", config=ProxyClipConfig(steps=20, ...))
    CLIPModel.from_pretrained(path); CLIPVisionModel.from_pretrained(path)     # like openai/clip-vit-*
    CLIPTokenizer.from_pretrained(path); CLIPImageProcessor.from_pretrained(path)
    json.loads((path / "proxy_clip.json").read_text())["metrics"]             # held-out numbers (also README.md)

The directory is ``<cache>/proxy_clip-<fingerprint>``: the fingerprint hashes every ``ProxyClipConfig`` field,
so another config builds another tower and the same config is never retrained. ``<cache>`` is ``cache_dir``,
else ``$EVALIGN_HOME``, else ``~/.cache/evalign``. The final directory appears in one rename when complete;
an interrupted build resumes from ``<cache>/.proxy_clip-<fingerprint>.work/checkpoint.pt``.

Applied to rendered event frames the tower is out of distribution exactly as real CLIP is, so the demo shows a
real modality gap. Scenes: the scikit-image photographs of :data:`~modeling_evalign.events.scenes.PHOTOS`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..events.scenes import PHOTOS
from ..utils.io_utils import atomic_directory, atomic_write_json

__all__ = ["ProxyClipConfig", "build_proxy_clip", "default_cache_dir", "ensure_proxy_clip", "proxy_clip_dir"]

FORMAT_VERSION = 1
INFO_FILE = "proxy_clip.json"
CARD_TEMPLATE = "proxy_clip_card.md.jinja"


@dataclass
class ProxyClipConfig:
    """Everything that determines the tower (all of it enters the fingerprint). Sizes default to ~1-2 minutes
    of pretraining on 2 CPU cores; ``image_size``/``patch_size`` fix the token count, which dominates cost."""

    photos: list[str] = field(default_factory=lambda: sorted(PHOTOS))
    # model
    image_size: int = 80
    patch_size: int = 16  # 5x5 patches: cost grows with the token count
    hidden_size: int = 128
    intermediate_size: int = 512
    vision_layers: int = 4
    text_layers: int = 3
    num_heads: int = 4
    projection_dim: int = 128
    max_text_length: int = 32
    vocab_size: int = 1024  # 514 byte symbols + learnt merges (fewer when the captions run out of pairs)
    # data: sequences = camera paths per photograph; frames are rendered at render_size (width, height)
    train_sequences_per_photo: int = 8
    test_sequences_per_photo: int = 2
    frames_per_sequence: int = 16
    render_size: tuple[int, int] = (106, 80)
    crop_scale: tuple[float, float] = (0.5, 1.0)
    jitter: float = 0.3
    # optimisation
    steps: int = 200
    batch_size: int = 64
    learning_rate: float = 5e-4
    weight_decay: float = 0.1
    warmup_steps: int = 10
    checkpoint_every: int = 50
    seed: int = 0

    def __post_init__(self):
        self.photos = list(self.photos)
        unknown = [p for p in self.photos if p not in PHOTOS]
        if unknown or len(self.photos) < 2:
            raise ValueError(f"ProxyClipConfig.photos={self.photos!r}: need >= 2 names from {sorted(PHOTOS)}")
        for name in ("image_size", "patch_size", "hidden_size", "intermediate_size", "vision_layers", "text_layers",
                     "num_heads", "projection_dim", "max_text_length", "train_sequences_per_photo",
                     "test_sequences_per_photo", "frames_per_sequence", "steps", "batch_size", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ProxyClipConfig.{name}={getattr(self, name)!r}: expected an integer >= 1")
        if self.image_size % self.patch_size:
            raise ValueError(f"ProxyClipConfig.image_size={self.image_size} is not a multiple of patch_size={self.patch_size}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"ProxyClipConfig.hidden_size={self.hidden_size} is not a multiple of num_heads={self.num_heads}")
        self.render_size = tuple(int(v) for v in self.render_size)
        self.crop_scale = tuple(float(v) for v in self.crop_scale)
        if len(self.render_size) != 2 or min(self.render_size) < 8:
            raise ValueError(f"ProxyClipConfig.render_size={self.render_size!r}: expected (width, height), each >= 8")
        if not (len(self.crop_scale) == 2 and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1):
            raise ValueError(f"ProxyClipConfig.crop_scale={self.crop_scale!r}: expected 0 < lo <= hi <= 1")
        if not self.learning_rate > 0:
            raise ValueError(f"ProxyClipConfig.learning_rate={self.learning_rate!r}: expected > 0")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def fingerprint(self) -> str:
        blob = json.dumps({"format_version": FORMAT_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def default_cache_dir() -> Path:
    return Path(os.environ.get("EVALIGN_HOME") or Path.home() / ".cache" / "evalign")


def proxy_clip_dir(config: ProxyClipConfig | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the tower of ``config`` lives (whether or not it is built yet)."""
    config = config or ProxyClipConfig()
    return Path(cache_dir or default_cache_dir()) / f"proxy_clip-{config.fingerprint()}"


def _is_complete(path: Path) -> bool:
    return (path / INFO_FILE).is_file() and (path / "model.safetensors").is_file()


def ensure_proxy_clip(cache_dir: str | os.PathLike | None = None, config: ProxyClipConfig | None = None,
                      progress: bool = True, log=print) -> Path:
    """The proxy tower's directory, built (and cached) on first use, reused afterwards."""
    config = config or ProxyClipConfig()
    dest = proxy_clip_dir(config, cache_dir)
    if _is_complete(dest):
        return dest
    if log:
        log(f"[evalign] pretraining the proxy CLIP tower -> {dest} (once; reused afterwards)")
    return build_proxy_clip(dest, config, progress=progress)


def build_proxy_clip(dest: str | os.PathLike, config: ProxyClipConfig | None = None, progress: bool = True,
                     _stop_after_steps: int | None = None) -> Path:
    """Pretrain, evaluate and save the tower into ``dest`` (atomically); resumable through ``<dest>.work``."""
    import torch
    from transformers import CLIPImageProcessor, CLIPProcessor

    from .clip_preprocessing import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    from .proxy_clip_data import build_tokenizer, render_frames
    from .proxy_clip_train import evaluate_proxy_clip, train_proxy_clip

    config = config or ProxyClipConfig()
    dest = Path(dest)
    work = dest.parent / f".{dest.name}.work"
    started = time.perf_counter()
    cpu0 = os.times()
    labels = [PHOTOS[p] for p in config.photos]
    tokenizer = build_tokenizer(config.photos, vocab_size=config.vocab_size, max_length=config.max_text_length)
    model = train_proxy_clip(config, tokenizer, labels, work, progress=progress, _stop_after_steps=_stop_after_steps)
    test = render_frames(config.photos, "test", config.test_sequences_per_photo, config.frames_per_sequence,
                         tuple(config.render_size), config.seed)
    metrics = evaluate_proxy_clip(model, tokenizer, test, labels, config.image_size, config.max_text_length)
    cpu1 = os.times()
    info = {
        "format_version": FORMAT_VERSION,
        "fingerprint": config.fingerprint(),
        "config": config.to_dict(),
        "metrics": metrics,
        "class_labels": labels,
        "zero_shot_template": "a photo of the {}",
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "train_frames": len(config.photos) * config.train_sequences_per_photo * config.frames_per_sequence,
        "wall_s": round(time.perf_counter() - started, 1),
        "cpu_s": round((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system), 1),
        "torch": torch.__version__,
    }
    size = {"shortest_edge": config.image_size}
    crop = {"height": config.image_size, "width": config.image_size}
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size=size, crop_size=crop, image_mean=list(OPENAI_CLIP_MEAN),
                                           image_std=list(OPENAI_CLIP_STD)),
        tokenizer=tokenizer,
    )
    with atomic_directory(dest) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        atomic_write_json(tmp / INFO_FILE, info)
        write_proxy_card(tmp, info)
    shutil.rmtree(work, ignore_errors=True)
    return dest


def write_proxy_card(folder: Path, info: dict[str, Any]) -> Path:
    """README.md from ``hub_cards/proxy_clip_card.md.jinja`` with the held-out numbers in model-index form."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from ..hub.templates import template_path
    from ..utils.io_utils import atomic_write_text

    m = info["metrics"]
    name = f"evalign-proxy-clip-{info['fingerprint']}"
    results = [
        EvalResult(task_type="zero-shot-image-classification", dataset_type="evalign-synthetic-frames",
                   dataset_name="synthetic RGB frames (held-out camera paths)", dataset_split="test",
                   metric_type="accuracy", metric_name="zero-shot accuracy", metric_value=m["zero_shot/accuracy"]),
    ] + [
        EvalResult(task_type="retrieval", dataset_type="evalign-synthetic-frames",
                   dataset_name="synthetic RGB frames (held-out camera paths)", dataset_split="test",
                   metric_type=f"{k.split('/')[0]}_recall_at_{k[-1]}", metric_name=k, metric_value=m[k])
        for k in ("i2t/R@1", "i2t/R@5", "t2i/R@1", "t2i/R@5")
    ]
    card_data = ModelCardData(model_name=name, library_name="transformers", license="apache-2.0",
                              pipeline_tag="zero-shot-image-classification",
                              tags=["evalign", "clip", "proxy-tower", "synthetic"], eval_results=results)
    rows = [("zero-shot accuracy", m["zero_shot/accuracy"], m["zero_shot/chance"])] + [
        (k, m[k], m[f"{k}/chance"]) for k in ("i2t/R@1", "i2t/R@5", "t2i/R@1", "t2i/R@5")
    ]
    card = ModelCard.from_template(
        card_data, template_path=str(template_path(CARD_TEMPLATE)), model_id=name, info=info,
        metric_rows=[(n, f"{100 * v:.1f}", f"{100 * c:.1f}", f"{v / c:.1f}x") for n, v, c in rows],
        config_rows=sorted(info["config"].items()),
    )
    return atomic_write_text(folder / "README.md", str(card))
