"""Typed training configuration, parsed from the command line and saved as ``train_config.json``."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..registry import get_strategy, strategy_names

# The eight DSEC window durations of the product brief (DsecAlignmentBuilder config names).
DSEC_DURATIONS: tuple[str, ...] = ("200ms", "500ms", "1s", "2s", "4s", "5s", "10s", "20s")

# the trainable strategies come from the registry (``modeling_evalign.registry``): each spec says what it
# trains on (``data_kind``) and whether it needs class labels

TRAIN_CONFIG_NAME = "train_config.json"
# train_dir of a run whose datasets are passed to training.loop.train directly (the trainer facade)
IN_MEMORY = "<in-memory>"


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class TrainConfig:
    """Everything one training run needs. ``batch_size`` is the GLOBAL batch (all processes together),
    so the same command gives the same run on 1 or N processes; it must be divisible by the process count.
    """

    strategy: str = field(default="lightweight", metadata=_help(f"one of {', '.join(strategy_names())}"))
    output_dir: str = field(default="outputs", metadata=_help("run directory (a subdirectory per duration)"))
    # data: feature directories (``{duration}`` is replaced per duration) or a DSEC tree
    train_dir: str | None = field(default=None, metadata=_help("feature directory of the training split"))
    val_dir: str | None = field(default=None, metadata=_help("feature directory of the validation split"))
    dsec_data_dir: str | None = field(default=None, metadata=_help("DSEC (or synthetic DSEC) tree for the builder"))
    dsec_cache_dir: str | None = field(default=None, metadata=_help("datasets cache for the DSEC builder"))
    durations: list[str] = field(default_factory=list, metadata=_help(f"any of {' '.join(DSEC_DURATIONS)}"))
    val_fraction: float = field(default=0.2, metadata=_help("held-out fraction when no val_dir is given"))
    # model
    model_config: list[str] = field(default_factory=list, metadata=_help("strategy config overrides key=json"))
    clip_model: str = field(default="openai/clip-vit-large-patch14", metadata=_help("frozen CLIP repo id or path"))
    clip_revision: str = field(default="main", metadata=_help("revision of clip_model"))
    closed_form_init: float | None = field(
        default=None,
        metadata=_help("lightweight: start from the ridge solution with this ridge (fit_closed_form warm start)"),
    )
    text_model: str | None = field(
        default=None,
        metadata=_help("triple_modal(_image): frozen CLIP text tower (with its tokenizer), repo id or path; "
                       "default: clip_model"),
    )
    label_key: str = field(
        default="scene",
        metadata=_help("triple_modal(_image): per-sample field naming its class (metadata.json / builder column)"),
    )
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    # optimisation (CEIA: Adam lr 5e-4, cosine schedule, 20 epochs)
    num_epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 5e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    seed: int = 42
    stop_at_step: int | None = field(
        default=None, metadata=_help("stop (with a checkpoint) after this global step; the schedule still spans num_epochs")
    )
    # checkpoints
    checkpointing_steps: int = field(default=500, metadata=_help("save a checkpoint every N optimizer steps"))
    checkpoints_total_limit: int | None = field(default=3, metadata=_help("keep at most this many checkpoints"))
    resume_from_checkpoint: str | None = field(default=None, metadata=_help("'latest' or a checkpoint path"))
    # runtime
    mixed_precision: str = "no"
    cpu: bool = field(default=False, metadata=_help("force CPU (also ACCELERATE_USE_CPU=1)"))
    num_workers: int = 0
    log_with: str | None = field(default=None, metadata=_help("accelerate tracker, e.g. tensorboard"))
    export_merged: bool = field(default=False, metadata=_help("LoRA runs: also save the merged vision tower"))
    push_to_hub: bool = False
    hub_model_id: str | None = field(default=None, metadata=_help("repo id; '{duration}' is replaced"))

    def __post_init__(self):
        if self.strategy not in strategy_names():
            raise ValueError(f"TrainConfig.strategy={self.strategy!r} is unknown: expected one of {strategy_names()}")
        bad = [d for d in self.durations if d not in DSEC_DURATIONS]
        if bad:
            raise ValueError(f"TrainConfig.durations has unknown {bad}: valid durations are {list(DSEC_DURATIONS)}")
        for name in ("num_epochs", "batch_size", "checkpointing_steps", "lora_r", "lora_alpha"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r} is invalid: expected an integer >= 1")
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise ValueError("TrainConfig.checkpoints_total_limit must be >= 1 or None (keep all)")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"TrainConfig.val_fraction={self.val_fraction!r} is invalid: expected 0 < x < 1")
        if self.closed_form_init is not None and (not self.spec.closed_form_init or self.closed_form_init < 0):
            raise ValueError(
                f"TrainConfig.closed_form_init={self.closed_form_init!r} is invalid: a ridge >= 0, and only for "
                f"strategies with a closed-form fit ({[n for n in strategy_names() if get_strategy(n).closed_form_init]}; "
                f"strategy={self.strategy!r})"
            )
        if self.learning_rate <= 0:
            raise ValueError(f"TrainConfig.learning_rate={self.learning_rate!r} is invalid: expected > 0")
        if (self.train_dir is None) == (self.dsec_data_dir is None):
            raise ValueError("TrainConfig: give exactly one data source: train_dir (features) or dsec_data_dir (DSEC)")
        if self.dsec_data_dir is not None and not self.durations:
            raise ValueError(f"TrainConfig.durations is empty: DSEC training needs one or more of {list(DSEC_DURATIONS)}")
        for path in (self.train_dir, self.val_dir):
            if path and "{duration}" in path and not self.durations:
                raise ValueError(f"TrainConfig: {path!r} contains '{{duration}}' but no durations were given")
        from .validation import validate_train_config

        validate_train_config(self)  # non-finite/negative values, unknown model_config keys, the Hub target

    @property
    def spec(self):
        """The strategy's :class:`~modeling_evalign.registry.StrategySpec`."""
        return get_strategy(self.strategy)

    def model_overrides(self) -> dict[str, Any]:
        """``model_config`` entries ``key=value`` as a dict (values parsed as JSON, else kept as strings)."""
        out: dict[str, Any] = {}
        for item in self.model_config:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"TrainConfig.model_config entry {item!r} is invalid: expected key=value")
            try:
                out[key] = json.loads(value)
            except json.JSONDecodeError:
                out[key] = value
        return out

    def runs(self) -> list[str | None]:
        """One entry per training run: the durations, or ``[None]`` for a single feature-directory run."""
        return list(self.durations) if self.durations else [None]

    def for_duration(self, duration: str | None) -> TrainConfig:
        """This config specialised to one duration: ``{duration}`` substituted, output in a subdirectory."""
        if duration is None:
            return dataclasses.replace(self)

        def sub(value):
            return value.replace("{duration}", duration) if isinstance(value, str) else value

        return dataclasses.replace(
            self,
            durations=[duration],
            output_dir=str(Path(self.output_dir) / duration),
            train_dir=sub(self.train_dir),
            val_dir=sub(self.val_dir),
            hub_model_id=sub(self.hub_model_id),
        )

    def check_paths(self, data_dirs: bool = True) -> None:
        """FileNotFoundError naming the first missing data path (after ``{duration}`` substitution);
        ``data_dirs=False``: only the resume checkpoint (the data was given in memory)."""
        for name in ("train_dir", "val_dir", "dsec_data_dir") if data_dirs else ():
            path = getattr(self, name)
            if path is not None and path != IN_MEMORY and not Path(path).is_dir():
                raise FileNotFoundError(f"TrainConfig.{name}: directory {path!r} does not exist")
        if self.resume_from_checkpoint not in (None, "latest") and not Path(self.resume_from_checkpoint).is_dir():
            raise FileNotFoundError(f"resume_from_checkpoint: checkpoint directory {self.resume_from_checkpoint!r} not found")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, directory: str | os.PathLike) -> Path:
        from ..utils.io_utils import atomic_write_json

        return atomic_write_json(Path(directory) / TRAIN_CONFIG_NAME, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainConfig:
        path = Path(path)
        if path.is_dir():
            path = path / TRAIN_CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found")
        data = json.loads(path.read_text())
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"{path}: unknown TrainConfig fields {sorted(unknown)}")
        return cls(**data)


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> TrainConfig:
    """Parse command-line flags (one per TrainConfig field, e.g. ``--batch_size 32``) into a TrainConfig.

    Unknown or malformed flags exit with status 2 after one stderr line; invalid values raise the
    TrainConfig's ValueError (``utils.cli.run_cli`` turns it into one line and status 2).
    """
    from transformers import HfArgumentParser

    from ..utils.cli import ArgumentParser

    class Parser(HfArgumentParser):
        error = ArgumentParser.error  # bad flags: one stderr line and exit status 2, not the usage block

    parser = Parser(TrainConfig, prog=prog, description="Train an evalign alignment strategy with Accelerate.")
    (config,) = parser.parse_args_into_dataclasses(args=argv)
    return config
