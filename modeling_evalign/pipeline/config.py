"""Settings of the main job: :class:`PipelineConfig`, its presets and the command line."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..utils.cli import ArgumentParser

_REPO = Path(__file__).resolve().parents[2]
# the pretrained FireNet file: shared/ inside the checkout where it has one, else next to it (../shared)
DEFAULT_FIRENET = next((p for p in (_REPO / "shared", _REPO.parent / "shared") if (p / "weights").is_dir()),
                       _REPO.parent / "shared") / "weights" / "firenet" / "model.pth"

# references computed without training, around the trained strategies of the registry (those with a recipe)
REFERENCE_ROWS = ("unaligned", "closed_form", "reconstruction", "rgb_reference")


def strategy_rows() -> tuple[str, ...]:
    """Every row the main job can compute, in table order."""
    from ..registry import job_strategies

    return ("unaligned", "closed_form", *job_strategies(), "reconstruction", "rgb_reference")


@dataclass
class PipelineConfig:
    """Sizes default to a run of a few minutes on 2 CPU cores (DSEC's real sizes are 640x480 / 1440x1080).

    ``clip=None`` uses the proxy CLIP pretrained here (``features.proxy_clip``; ``proxy_clip`` overrides its
    ``ProxyClipConfig`` fields, ``proxy_cache_dir`` its cache root) for both sides: the EventGPT-style event
    frames and the RGB targets. ``clip="openai/clip-vit-large-patch14-336"`` (a repo id or a path) loads that
    tower instead; its text tower then serves the triple_modal prompts.
    """

    output_dir: str = "outputs/demo"
    sequences: int = 10
    seconds: float = 16.0
    # Scenes recur across sequences (a place driven through twice, as in DSEC), so held-out sequences
    # show scenes seen in training from other camera paths.
    photos: list[str] = field(default_factory=lambda: ["astronaut", "coffee", "chelsea", "rocket"])
    seed: int = 0
    sensor_size: tuple[int, int] = (320, 240)
    image_size: tuple[int, int] = (480, 360)
    durations: list[str] = field(default_factory=lambda: ["1s", "200ms"])
    strategies: list[str] = field(default_factory=lambda: list(strategy_rows()))
    clip: str | None = None
    proxy_clip: dict[str, Any] = field(default_factory=dict)
    proxy_cache_dir: str | None = None
    # feature strategies (lightweight, contrastive, triple_modal) on pre-extracted features
    num_epochs: int = 30
    lightweight_epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    # image-level strategies: LoRA (q/v) on a copy of the vision tower, the last EventGPT frame vs RGB frames
    image_epochs: int = 6
    image_batch_size: int = 32
    image_learning_rate: float = 5e-4
    ridge: float = 1.0
    firenet: str | None = str(DEFAULT_FIRENET)
    # E2VID/FireNet take one recurrent step per 0.35*H*W events: a 1 s window is ~20 steps. The demo
    # splits a dense window into at most this many equal steps to stay within minutes on 2 cores.
    reconstruction_max_steps: int = 4
    val_fraction: float = 0.15
    test_fraction: float = 0.25
    num_proc: int = 1
    # processes writing the synthetic DSEC tree (sequences are independent and seeded: the tree is identical)
    generator_workers: int = 2
    # torch intra-op threads of the stages (0: torch's default, one per core); the main process takes one while
    # the tree's workers or the proxy VLM's process hold the other cores
    torch_threads: int = 0
    # downstream (issue 19): the proxy VLM (``vlm``: a directory with target/ and draft/ instead; ``proxy_vlm``
    # overrides ProxyVlmConfig fields) answers questions on aligned event tokens; strategies retrained on the
    # video layout for ``downstream_epochs``; ``downstream_max_windows`` test windows at most (0 = all)
    downstream: bool = True
    vlm: str | None = None
    proxy_vlm: dict[str, Any] = field(default_factory=dict)
    downstream_epochs: int = 10
    downstream_max_windows: int = 96  # evenly spaced test windows (the row's n): 200ms has 240, ~1 s per window
    downstream_gamma: int = 4
    downstream_max_new_tokens: int = 40
    downstream_speed_windows: int = 8  # caption prompts timed for the speedup (gamma chosen from exact counts)
    downstream_speed_repeats: int = 3

    def __post_init__(self):
        for name in ("sequences", "num_epochs", "batch_size", "image_epochs", "image_batch_size", "num_proc",
                     "generator_workers",
                     "downstream_epochs", "downstream_gamma", "downstream_max_new_tokens", "downstream_speed_windows",
                     "downstream_speed_repeats"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"PipelineConfig.{name}={getattr(self, name)!r}: expected an integer >= 1")
        if self.sequences < 3:
            raise ValueError(f"PipelineConfig.sequences={self.sequences}: need >= 3 (train, validation, test)")
        if int(self.torch_threads) < 0:
            raise ValueError(f"PipelineConfig.torch_threads={self.torch_threads}: expected >= 0 (0 = torch's default)")
        if int(self.downstream_max_windows) < 0:
            raise ValueError(f"PipelineConfig.downstream_max_windows={self.downstream_max_windows}: expected >= 0")
        if not self.seconds > 0:
            raise ValueError(f"PipelineConfig.seconds={self.seconds}: expected > 0")
        unknown = [s for s in self.strategies if s not in strategy_rows()]
        if unknown:
            raise ValueError(f"PipelineConfig.strategies has unknown {unknown}: expected any of {list(strategy_rows())}")
        if not (0 < self.test_fraction < 1 and 0 <= self.val_fraction < 1 and self.val_fraction + self.test_fraction < 1):
            raise ValueError(f"PipelineConfig: val_fraction={self.val_fraction}, test_fraction={self.test_fraction}: "
                             "expected fractions with val + test < 1")
        from ..utils.checks import check_positive_finite, check_size

        self.sensor_size = check_size("PipelineConfig.sensor_size (--sensor-size)", self.sensor_size)
        self.image_size = check_size("PipelineConfig.image_size (--image-size)", self.image_size)
        check_positive_finite("PipelineConfig.learning_rate (--learning-rate)", self.learning_rate)
        check_positive_finite("PipelineConfig.image_learning_rate", self.image_learning_rate)
        if self.clip:  # before generating any data: a missing --clip path is named now, not after minutes
            from ..features.towers import check_tower_reference

            check_tower_reference(self.clip, "--clip")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --preset large: the brief's sizes for the study (200ms ~5,500 windows, 1s ~1,100 over all splits)
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "large": {"output_dir": "outputs/large", "sequences": 40, "seconds": 28.0, "photos": ["astronaut", "coffee", "chelsea", "rocket", "camera",
                                                           "coins", "clock", "stereo_motorcycle"],
              "num_epochs": 40, "image_epochs": 3},
}


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from err
    return w, h


def parse_args(argv: list[str] | None = None) -> PipelineConfig:
    """Flags override the preset, which overrides the defaults."""
    defaults = PipelineConfig()
    p = ArgumentParser(prog="python -m modeling_evalign.pipeline",
                       description="The main job: synthetic DSEC tree -> datasets -> CLIP features -> strategies "
                                   "-> one metrics table.")
    p.add_argument("--preset", choices=sorted(PRESETS), default="default",
                   help="default: minutes on 2 cores; large: the brief's sizes (200ms ~5,500 pairs, 1s ~1,100)")
    p.add_argument("--output-dir", default=None)
    p.add_argument("--sequences", type=int)
    p.add_argument("--seconds", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--sensor-size", type=_size, help="WxH of the event sensor")
    p.add_argument("--image-size", type=_size, help="WxH of the RGB frames")
    p.add_argument("--photos", nargs="+", help="scikit-image photographs to animate")
    p.add_argument("--durations", nargs="+")
    p.add_argument("--strategies", nargs="+", help=f"rows to compute (default: all of {' '.join(strategy_rows())})")
    p.add_argument("--clip", help="CLIP repo id or path for both towers (default: the proxy CLIP pretrained here)")
    p.add_argument("--proxy-cache-dir", help="cache of the proxy tower (default: $EVALIGN_HOME or ~/.cache/evalign)")
    p.add_argument("--proxy-steps", type=int, help="pretraining steps of the proxy tower")
    p.add_argument("--num-epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--image-epochs", type=int, help="epochs of the image-level strategies")
    p.add_argument("--firenet", help="pretrained FireNet checkpoint (.pth)")
    p.add_argument("--reconstruction-max-steps", type=int, help="cap on FireNet steps per window (0 = no cap)")
    p.add_argument("--num-proc", type=int)
    p.add_argument("--generator-workers", type=int, help="processes writing the synthetic DSEC tree (default 2)")
    p.add_argument("--torch-threads", type=int, help="torch intra-op threads of the stages (default 0: torch's default)")
    p.add_argument("--downstream", action=argparse.BooleanOptionalAction, default=None,
                   help="the downstream stage: the VLM answers questions on aligned event tokens (default: on)")
    p.add_argument("--vlm", help="a VLM directory with target/ and draft/ (default: the proxy VLM pretrained here)")
    p.add_argument("--downstream-max-windows", type=int, help="test windows the VLM reads at most (0 = all)")
    args = {k: v for k, v in vars(p.parse_args(argv)).items() if v is not None}
    values = {**PRESETS[args.pop("preset")]}
    steps = args.pop("proxy_steps", None)
    values.update(args)
    if steps is not None:
        values["proxy_clip"] = {"steps": steps}
    if "output_dir" not in values:
        values["output_dir"] = defaults.output_dir
    return PipelineConfig(**values)
