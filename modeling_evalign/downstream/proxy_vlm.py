"""A proxy vision-language model pretrained here: ``VideoLlavaForConditionalGeneration`` on the proxy CLIP tower
(frozen image and video towers), a small LLaMA decoder and its projector trained on the synthetic generator's RGB
frames to answer the closed question set of :mod:`.questions`; plus a draft VLM (same class and tower, a tiny
decoder) distilled from it for speculative decoding.

API::

    from modeling_evalign.downstream.proxy_vlm import ProxyVlmConfig, ensure_proxy_vlm

    path = ensure_proxy_vlm(ensure_proxy_clip())       # builds once (~100 s on one core), then reuses
    VideoLlavaForConditionalGeneration.from_pretrained(path / "target")   # like LanguageBind/Video-LLaVA-7B-hf
    AutoTokenizer.from_pretrained(path / "target"); ... path / "draft"
    json.loads((path / "proxy_vlm.json").read_text())["metrics"]           # held-out accuracy (also README.md)

The directory is ``<cache>/proxy_vlm-<fingerprint>``; the fingerprint hashes every ``ProxyVlmConfig`` field and
the tower's identity (its config and a hash of its weights), so another config or another tower builds another
model. It appears in one rename when complete; an interrupted build resumes from ``.proxy_vlm-<fp>.work``.

Measured with the default config on the proxy CLIP tower (held-out camera paths): the scene is read (~95%), the
pan direction is not (chance, video == one frame), so the caption, which states it, is never exactly right. The
tower's tokens (80 px frames, 16 px patches) hardly encode the pan: at 0.2 s the view moves a median 2 px (p90 4 px),
at 1 s 8 px; probes on the first/last frames' tokens reach 25-71% by magnitude on four directions, where the same
probe on 16-px patch colours reaches 91% from 12 px (``benchmarks/bench_vlm_motion_probe.py``).
The draft still follows the target closely (~96% teacher-forced token agreement), which is what speculative
decoding needs.
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

__all__ = ["ProxyVlmConfig", "build_proxy_vlm", "ensure_proxy_vlm", "proxy_vlm_dir", "tower_identity"]

FORMAT_VERSION = 1
INFO_FILE = "proxy_vlm.json"
CARD_TEMPLATE = "proxy_vlm_card.md.jinja"


@dataclass
class ProxyVlmConfig:
    """Everything that determines the target and draft VLMs (all of it enters the fingerprint)."""

    photos: list[str] = field(default_factory=lambda: sorted(PHOTOS))
    num_frames: int = 5  # video frames per window (EventGPT's 5 event frames)
    # target decoder: narrow but deep, so a decode step costs several times the draft's
    hidden_size: int = 128
    layers: int = 6
    intermediate_size: int = 384
    heads: int = 4
    # draft decoder: tiny
    draft_hidden_size: int = 128
    draft_layers: int = 1
    draft_intermediate_size: int = 256
    draft_heads: int = 2
    # data: sequences = camera paths per photograph, rendered at render_size (width, height) on a 20 Hz clock
    train_sequences_per_photo: int = 8
    test_sequences_per_photo: int = 3
    seconds: float = 3.0
    frame_rate_hz: float = 20.0
    render_size: tuple[int, int] = (106, 80)
    durations: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0)
    train_windows: int = 6000
    image_fraction: float = 0.25  # share of each batch on the image path (one RGB frame)
    feature_noise: float = 0.1  # gaussian noise on tower tokens, x their per-channel std
    token_dropout: float = 0.05
    # optimisation
    steps: int = 100
    draft_steps: int = 80
    batch_size: int = 32
    learning_rate: float = 2e-3
    draft_learning_rate: float = 3e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20
    checkpoint_every: int = 50
    eval_durations: tuple[float, ...] = (0.2, 1.0)
    eval_stride: float = 0.5  # s between held-out windows' starts (at least the duration: they never overlap)
    max_new_tokens: int = 40
    seed: int = 0

    def __post_init__(self):
        self.photos = list(self.photos)
        unknown = [p for p in self.photos if p not in PHOTOS]
        if unknown or len(self.photos) < 2:
            raise ValueError(f"ProxyVlmConfig.photos={self.photos!r}: need >= 2 names from {sorted(PHOTOS)}")
        for name in ("num_frames", "hidden_size", "layers", "intermediate_size", "heads", "draft_hidden_size",
                     "draft_layers", "draft_intermediate_size", "draft_heads", "train_sequences_per_photo",
                     "test_sequences_per_photo", "train_windows", "steps", "draft_steps", "batch_size",
                     "checkpoint_every", "max_new_tokens"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ProxyVlmConfig.{name}={getattr(self, name)!r}: expected an integer >= 1")
        for h, n, what in ((self.hidden_size, self.heads, ""), (self.draft_hidden_size, self.draft_heads, "draft_")):
            if h % n:
                raise ValueError(f"ProxyVlmConfig.{what}hidden_size={h} is not a multiple of {what}heads={n}")
        self.render_size = tuple(int(v) for v in self.render_size)
        self.durations = tuple(float(v) for v in self.durations)
        self.eval_durations = tuple(float(v) for v in self.eval_durations)
        if len(self.render_size) != 2 or min(self.render_size) < 8:
            raise ValueError(f"ProxyVlmConfig.render_size={self.render_size!r}: expected (width, height), each >= 8")
        longest = max(self.durations + self.eval_durations, default=0)
        if not self.durations or min(self.durations) <= 0 or longest + 2 / self.frame_rate_hz > self.seconds:
            raise ValueError(f"ProxyVlmConfig.durations={self.durations!r}, eval_durations={self.eval_durations!r}: "
                             f"expected > 0 and shorter than seconds={self.seconds} minus two frames")
        for name in ("image_fraction", "feature_noise", "token_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"ProxyVlmConfig.{name}={getattr(self, name)!r}: expected in [0, 1)")
        if not 0 <= self.warmup_steps <= min(self.steps, self.draft_steps):
            raise ValueError(f"ProxyVlmConfig.warmup_steps={self.warmup_steps}: expected in [0, min(steps, "
                             f"draft_steps)={min(self.steps, self.draft_steps)}]")
        if not (self.learning_rate > 0 and self.draft_learning_rate > 0 and self.eval_stride > 0):
            raise ValueError("ProxyVlmConfig.learning_rate, draft_learning_rate and eval_stride must be > 0")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def fingerprint(self, tower: str | os.PathLike | None = None) -> str:
        blob = {"format_version": FORMAT_VERSION, **self.to_dict()}
        if tower is not None:
            blob["tower"] = tower_identity(tower)
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]


def tower_identity(tower: str | os.PathLike) -> dict[str, Any]:
    """The tower's vision config and the sha256 of its weights file: a retrained or other tower is another model."""
    path = Path(tower)
    weights = path / "model.safetensors"
    if not (path / "config.json").is_file() or not weights.is_file():
        raise FileNotFoundError(f"tower {path}: expected a CLIP directory with config.json and model.safetensors")
    digest = hashlib.sha256()
    with open(weights, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    config = json.loads((path / "config.json").read_text())
    return {"vision_config": config.get("vision_config", config), "weights_sha256": digest.hexdigest()}


def default_cache_dir() -> Path:
    return Path(os.environ.get("EVALIGN_HOME") or Path.home() / ".cache" / "evalign")


def proxy_vlm_dir(tower: str | os.PathLike, config: ProxyVlmConfig | None = None,
                  cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the VLM of ``config`` on ``tower`` lives (whether or not it is built yet)."""
    config = config or ProxyVlmConfig()
    return Path(cache_dir or default_cache_dir()) / f"proxy_vlm-{config.fingerprint(tower)}"


def _is_complete(path: Path) -> bool:
    return (path / INFO_FILE).is_file() and all((path / k / "model.safetensors").is_file() for k in ("target", "draft"))


def ensure_proxy_vlm(tower: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                     config: ProxyVlmConfig | None = None, progress: bool = True, log=print) -> Path:
    """The proxy VLM's directory (``target/``, ``draft/``, ``proxy_vlm.json``, ``README.md``), built on first use."""
    config = config or ProxyVlmConfig()
    dest = proxy_vlm_dir(tower, config, cache_dir)
    if _is_complete(dest):
        return dest
    if log:
        log(f"[evalign] pretraining the proxy VLM -> {dest} (once; reused afterwards)")
    return build_proxy_vlm(dest, tower, config, progress=progress)


def build_proxy_vlm(dest: str | os.PathLike, tower: str | os.PathLike, config: ProxyVlmConfig | None = None,
                    progress: bool = True, _stop_after_steps: int | None = None) -> Path:
    """Train, evaluate and save target + draft into ``dest`` (atomically); resumable through ``<dest>.work``."""
    import torch

    from .proxy_vlm_build import build_models

    config = config or ProxyVlmConfig()
    dest, tower = Path(dest), Path(tower)
    identity = tower_identity(tower)
    work = dest.parent / f".{dest.name}.work"
    started = time.perf_counter()
    cpu0 = os.times()
    with torch.random.fork_rng():
        built = build_models(config, tower, work, progress=progress, _stop_after_steps=_stop_after_steps)
    cpu1 = os.times()
    info = {
        "format_version": FORMAT_VERSION,
        "fingerprint": config.fingerprint(tower),
        "config": config.to_dict(),
        "tower": {"path": str(tower), **identity},
        "metrics": built.metrics,
        "wall_s": round(time.perf_counter() - started, 1),
        "cpu_s": round((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system), 1),
        "torch": torch.__version__,
        **built.info,
    }
    with atomic_directory(dest) as tmp:
        for name, model in (("target", built.target), ("draft", built.draft)):
            model.save_pretrained(tmp / name)
            built.tokenizer.save_pretrained(tmp / name)
            if built.processor is not None:
                built.processor.save_pretrained(tmp / name)
        atomic_write_json(tmp / INFO_FILE, info)
        write_proxy_vlm_card(tmp, info)
    shutil.rmtree(work, ignore_errors=True)
    return dest


def write_proxy_vlm_card(folder: Path, info: dict[str, Any]) -> Path:
    """README.md from ``hub_cards/proxy_vlm_card.md.jinja``: per-question accuracy (video, one frame, chance)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from ..hub.templates import template_path
    from ..utils.io_utils import atomic_write_text
    from .questions import QUESTION_TYPES

    m = info["metrics"]
    name = f"evalign-proxy-video-llava-{info['fingerprint']}"
    rows, results = [], []
    for duration, per in m["target"].items():
        for qtype in (*QUESTION_TYPES, "overall"):
            video, image = per["video"].get(qtype), per["image"].get(qtype)
            if video is None:
                continue
            draft = m["draft"][duration]["video"].get(qtype)
            rows.append((duration, qtype, per["video"]["n"].get(qtype, sum(per["video"]["n"].values())),
                         _pct(video), _pct(image), _pct(draft), _pct(m["chance"].get(qtype)),
                         _pct(m["majority"][duration].get(qtype))))
            results.append(EvalResult(
                task_type="visual-question-answering", dataset_type="evalign-synthetic-windows",
                dataset_name=f"synthetic RGB video windows {duration} (held-out camera paths)", dataset_split="test",
                metric_type="accuracy", metric_name=f"{duration} {qtype} accuracy (video)", metric_value=video))
    card_data = ModelCardData(model_name=name, library_name="transformers", license="apache-2.0",
                              pipeline_tag="video-text-to-text", tags=["evalign", "video-llava", "proxy", "synthetic"],
                              eval_results=results)
    agreement = [(d, _pct(v["agreement"]), _pct(v["token_agreement"])) for d, v in m["draft"].items()]
    card = ModelCard.from_template(
        card_data, template_path=str(template_path(CARD_TEMPLATE)), model_id=name, info=info, rows=rows,
        agreement_rows=agreement, config_rows=sorted(info["config"].items()),
    )
    return atomic_write_text(folder / "README.md", str(card))


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:.1f}"
