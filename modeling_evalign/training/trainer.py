"""The product brief's single-process trainer: a thin facade over THE training loop (``training.loop``).

Works with any model of the uniform interface ``model(event_features=..., target_features=...)`` ->
output with ``.loss`` and ``.aligned_features`` (the lightweight and contrastive strategies)::

    trainer = ContrastiveAlignmentTrainer(model, train_dataset, val_dataset)
    result = trainer.train(num_epochs=20, save_path="alignment.pt")

Training runs through :func:`modeling_evalign.training.loop.train` (one Accelerate process): the same data
order, AdamW + warm-up/cosine schedule (``training.schedule``), checkpoints and training_info.json as
``train_accelerate.py``; this class only translates its arguments and adds validation before training and
retrieval positives. ``save_path`` is a Hugging Face checkpoint DIRECTORY (``config.json``,
``model.safetensors``, module files, ``training_info.json``); a name ending in ``.pt`` is still used as the
directory name (logged). While training, the loop's resumable checkpoints go to ``.<save_path name>.resume/``
next to it (one per epoch); rerunning the same call after a crash continues from the last finished epoch,
and the directory is removed once the checkpoint is written. Multi-process training: ``train_accelerate.py``.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import IN_MEMORY
from .finish import TRAINING_INFO_NAME

logger = logging.getLogger(__name__)


@dataclass
class TrainingResult:
    """What :meth:`ContrastiveAlignmentTrainer.train` returns.

    Attributes:
        history: one dict per finished epoch: ``epoch`` (1-based), ``train_loss`` (mean over batches),
            ``lr`` (at the end of the epoch), ``seconds``, and ``val/<metric>`` for every validation metric.
        initial_metrics: validation metrics before training (empty without a validation set).
        final_metrics: validation metrics after the last epoch (empty without a validation set).
        train_time_s: wall time of this call, seconds.
        save_path: checkpoint directory, or ``None`` when nothing was saved.
        resumed_from_epoch: epochs already done when this call resumed an interrupted run, else ``None``.
    """

    history: list[dict[str, float]]
    initial_metrics: dict[str, float]
    final_metrics: dict[str, float]
    train_time_s: float
    save_path: Path | None = None
    resumed_from_epoch: int | None = None


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class ContrastiveAlignmentTrainer:
    """Train an alignment model on an :class:`~modeling_evalign.data.alignment_dataset.AlignmentDataset`.

    Args:
        model: lightweight or contrastive alignment model (uniform interface above); trained in place.
        train_dataset: items ``{"event_features", "target_features", "index"}``.
        val_dataset: optional, same item format; evaluated before training and after every epoch.
        lr: peak AdamW learning rate.
        batch_size: training batch size; must not exceed ``len(train_dataset)`` (the last incomplete
            batch of an epoch is dropped, so InfoNCE never sees a batch of one).
        weight_decay: AdamW weight decay.
        warmup_ratio: fraction of the steps with a linear warm-up before the cosine decay.
        max_grad_norm: gradient-norm clip, ``None`` for none.
        seed: seeds the data order and the torch RNG (dropout), so runs repeat exactly.
        device: ``None`` = CUDA when available, else CPU. Runtime only: never written into the config.
        eval_batch_size: batch size of validation passes.
        ks: recall cut-offs for validation.
        positive_group_key: per-sample metadata key of ``val_dataset`` (e.g. ``"sequence"``) whose
            equal values count as retrieval positives (see :mod:`modeling_evalign.evaluation.metrics`).
        overlap_positives: count same-sequence overlapping windows of ``val_dataset`` as retrieval
            positives (per-sample ``sequence``, ``window_start_us``, ``window_end_us``); consecutive DSEC
            windows overlap in content. Exclusive with ``positive_group_key``.
        num_workers: DataLoader workers.
        progress: show a progress bar.
    """

    def __init__(
        self,
        model: nn.Module,
        train_dataset: Any,
        val_dataset: Any | None = None,
        *,
        lr: float = 5e-4,
        batch_size: int = 32,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.0,
        max_grad_norm: float | None = None,
        seed: int = 0,
        device: str | torch.device | None = None,
        eval_batch_size: int = 256,
        ks: tuple[int, ...] = (1, 5, 10),
        positive_group_key: str | None = None,
        overlap_positives: bool = False,
        num_workers: int = 0,
        progress: bool = True,
    ):
        from ..evaluation.metrics import TimeWindows

        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if len(train_dataset) == 0:
            raise ValueError("train_dataset is empty")
        self.batch_size = _positive_int(batch_size, "batch_size")
        if batch_size > len(train_dataset):
            raise ValueError(
                f"batch_size={batch_size} is larger than the training set ({len(train_dataset)} samples): "
                f"use batch_size <= {len(train_dataset)}"
            )
        if val_dataset is not None and len(val_dataset) < 2:
            raise ValueError(f"val_dataset needs at least 2 samples for retrieval metrics, got {len(val_dataset)}")
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a positive finite float, got {lr!r}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        if not 0.0 <= warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio!r}")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm!r}")
        config = getattr(model, "config", None)
        for name, ds in (("train_dataset", train_dataset), ("val_dataset", val_dataset)):
            for attr in ("event_dim", "target_dim"):
                want, got = getattr(config, attr, None), getattr(ds, attr, None)
                if ds is not None and want is not None and got is not None and want != got:
                    raise ValueError(f"{name}.{attr}={got} but model.config.{attr}={want}")
        self.positive_groups = self.positive_windows = None
        self.positive_rule = "pair (query i <-> gallery i)"
        if positive_group_key is not None or overlap_positives:
            if val_dataset is None:
                raise ValueError("positive_group_key / overlap_positives need a val_dataset")
            if positive_group_key is not None and overlap_positives:
                raise ValueError("pass positive_group_key or overlap_positives, not both")
            if overlap_positives:
                samples = val_dataset.samples_list()
                if samples is None:
                    raise KeyError("overlap_positives needs per-sample metadata in val_dataset")
                self.positive_windows = TimeWindows.from_samples(samples)
                self.positive_windows.tensors(len(val_dataset))  # validate now, not after an epoch
                self.positive_rule = "same-sequence overlapping windows (window_start_us/window_end_us)"
            else:
                self.positive_groups = val_dataset.metadata_column(positive_group_key)
                self.positive_rule = f"same {positive_group_key!r} group"
        self.model = model
        self.train_dataset = train_dataset
        self.val_dataset = val_dataset
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.warmup_ratio = float(warmup_ratio)
        self.max_grad_norm = max_grad_norm
        self.seed = int(seed)
        self.device = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu"
        )
        self.eval_batch_size = _positive_int(eval_batch_size, "eval_batch_size")
        self.ks = tuple(ks)
        self.num_workers = int(num_workers)
        self.progress = progress

    # -- evaluation -----------------------------------------------------------------------------

    def evaluate(self, dataset: Any | None = None, positive_groups: Any | None = None,
                 positive_windows: Any | None = None) -> dict[str, float]:
        """Validation metrics of the current model on ``dataset`` (default: the validation set).

        Keys: ``loss`` (mean over batches, weighted by batch size), ``mse`` and ``cosine_similarity``
        and retrieval recall ``e2t/R@k``, ``t2e/R@k``, ``mean/R@k``, all on the rows of the strategy's
        evaluation rule (token features flattened; targets after the model's target head when it has
        one). Computed by :func:`modeling_evalign.training.evaluation.evaluate`.
        """
        from .evaluation import evaluate

        if dataset is None:
            dataset, positive_groups, positive_windows = self.val_dataset, self.positive_groups, self.positive_windows
        if dataset is None:
            raise ValueError("no dataset to evaluate: pass one or give the trainer a val_dataset")
        self.model.to(self.device)
        metrics = evaluate(self.model, dataset, strategy="contrastive", batch_size=self.eval_batch_size,
                           device=self.device, ks=self.ks, positive_groups=positive_groups,
                           positive_windows=positive_windows, with_loss=True, num_workers=self.num_workers)
        if "cosine" in metrics:
            metrics["cosine_similarity"] = metrics.pop("cosine")
        return {"loss": metrics.pop("loss"), **metrics}

    # -- training -------------------------------------------------------------------------------

    def _fingerprint(self, num_epochs: int) -> dict[str, Any]:
        return {
            "num_epochs": num_epochs, "batch_size": self.batch_size, "lr": self.lr, "seed": self.seed,
            "weight_decay": self.weight_decay, "warmup_ratio": self.warmup_ratio,
            "train_size": len(self.train_dataset), "model_class": type(self.model).__name__,
        }

    def _train_config(self, num_epochs: int, output_dir: Path, checkpoint_every: int, resume: bool):
        from .config import TrainConfig
        from .models import strategy_of

        total = num_epochs * (len(self.train_dataset) // self.batch_size)
        return TrainConfig(
            strategy=strategy_of(self.model), output_dir=str(output_dir), train_dir=IN_MEMORY,
            num_epochs=num_epochs, batch_size=self.batch_size, learning_rate=self.lr,
            weight_decay=self.weight_decay, warmup_steps=int(self.warmup_ratio * total),
            max_grad_norm=self.max_grad_norm or 0.0, seed=self.seed, checkpointing_steps=checkpoint_every,
            checkpoints_total_limit=1, resume_from_checkpoint="latest" if resume else None,
            cpu=self.device.type == "cpu", num_workers=self.num_workers,
        )

    def _resumable(self, work_dir: Path | None, num_epochs: int):
        """The latest checkpoint of an interrupted call with the same settings (else None; others are dropped)."""
        from .checkpointing import TrainerState, find_latest_checkpoint

        checkpoint = find_latest_checkpoint(work_dir) if work_dir is not None else None
        if checkpoint is None:
            return None
        state = TrainerState.load(checkpoint)
        if state.extra.get("fingerprint") != self._fingerprint(num_epochs):
            logger.warning("ignoring %s: it belongs to a run with other settings (%s)", work_dir,
                           state.extra.get("fingerprint"))
            shutil.rmtree(work_dir)
            return None
        return state

    def train(self, num_epochs: int = 20, save_path: str | os.PathLike | None = None) -> TrainingResult:
        """Train for ``num_epochs`` epochs; with ``save_path`` write the checkpoint directory there.

        Returns:
            :class:`TrainingResult` with per-epoch history and initial/final validation metrics.
        """
        from .data import TrainData
        from .loop import RunOptions
        from .loop import train as run_loop

        num_epochs = _positive_int(num_epochs, "num_epochs")
        if not any(p.requires_grad for p in self.model.parameters()):
            raise ValueError(f"{type(self.model).__name__} has no trainable parameters")
        save_dir = self._resolve_save_path(save_path)
        start = time.perf_counter()
        steps_per_epoch = len(self.train_dataset) // self.batch_size
        work_dir = None if save_dir is None else save_dir.parent / f".{save_dir.name}.resume"
        resumed = self._resumable(work_dir, num_epochs)
        if resumed is not None:
            initial = resumed.extra.get("initial_metrics", {})
            resumed_from_epoch = resumed.global_step // steps_per_epoch
            logger.info("resuming from %s after epoch %d", work_dir, resumed_from_epoch)
        else:
            initial = self.evaluate() if self.val_dataset is not None else {}
            resumed_from_epoch = None
        ds = self.train_dataset
        info_extra = {
            "initial_metrics": initial, "retrieval_positives": self.positive_rule,
            "resumed_from_epoch": resumed_from_epoch, "train_size": len(ds),
            "val_size": len(self.val_dataset) if self.val_dataset is not None else 0,
            "event_dim": getattr(getattr(self.model, "config", None), "event_dim", getattr(ds, "event_dim", None)),
            "target_dim": getattr(getattr(self.model, "config", None), "target_dim", getattr(ds, "target_dim", None)),
            "event_shape": list(getattr(ds, "event_shape", ())), "target_shape": list(getattr(ds, "target_shape", ())),
        }
        options = RunOptions(
            model=self.model, evaluate=(lambda _model: self.evaluate()) if self.val_dataset is not None else None,
            final_dir=save_dir, save_final=save_dir is not None, model_card=False, progress=self.progress,
            extra_state={"fingerprint": self._fingerprint(num_epochs), "initial_metrics": initial},
            info_extra=info_extra, announce_checkpoints=False,
        )
        data = TrainData(ds, self.val_dataset, {"type": "in_memory"}, getattr(ds, "event_dim", None),
                         getattr(ds, "target_dim", None))
        with tempfile.TemporaryDirectory(prefix="evalign-trainer-") as scratch:
            # without save_path nothing is kept: the loop's run directory is a scratch one, never checkpointed
            output_dir = work_dir if work_dir is not None else Path(scratch)
            every = steps_per_epoch if work_dir is not None else 10**12
            config = self._train_config(num_epochs, output_dir, every, resume=resumed is not None)
            if save_dir is not None:  # hyperparameters as the trainer names them, next to the loop's
                info_extra["hyperparameters"] = {
                    "optimizer": "AdamW", "lr": self.lr, "batch_size": self.batch_size,
                    "weight_decay": self.weight_decay, "schedule": "cosine", "warmup_ratio": self.warmup_ratio,
                    "warmup_steps": config.warmup_steps, "max_grad_norm": self.max_grad_norm, "seed": self.seed,
                    "ks": list(self.ks),
                }
            result = run_loop(config, data=data, options=options)
        if result.interrupted:  # SIGTERM: keep the checkpoint just saved (train() again resumes), never report done
            raise KeyboardInterrupt(f"training stopped by SIGTERM at step {result.global_step}"
                                    + (f"; its checkpoint is in {work_dir}" if work_dir is not None else ""))
        if work_dir is not None:
            shutil.rmtree(work_dir, ignore_errors=True)
        history = result.history
        final = {k.removeprefix("val/"): v for k, v in history[-1].items() if k.startswith("val/")}
        return TrainingResult(history, initial, final, time.perf_counter() - start, save_dir, resumed_from_epoch)

    # -- files ----------------------------------------------------------------------------------

    @staticmethod
    def _resolve_save_path(save_path: str | os.PathLike | None) -> Path | None:
        if save_path is None:
            return None
        path = Path(save_path)
        if path.exists() and not path.is_dir():
            raise FileExistsError(f"save_path {path} exists and is a file: a checkpoint is a directory")
        if path.suffix == ".pt":
            logger.warning("save_path %s ends with .pt: writing a Hugging Face checkpoint DIRECTORY of that name "
                           "(config.json, model.safetensors, training_info.json), not a single torch file", path)
        return path


def training_result_to_dict(result: TrainingResult) -> dict[str, Any]:
    """JSON-ready dict of a :class:`TrainingResult`."""
    out = asdict(result)
    out["save_path"] = None if result.save_path is None else str(result.save_path)
    return out


__all__ = ["TRAINING_INFO_NAME", "ContrastiveAlignmentTrainer", "TrainingResult", "training_result_to_dict"]
