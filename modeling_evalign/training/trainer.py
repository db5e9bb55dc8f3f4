"""Single-process trainer for feature-level alignment models (the product brief's Quick Start).

Works with any model of the uniform interface ``model(event_features=..., target_features=...)`` ->
output with ``.loss`` and ``.aligned_features`` (the lightweight and contrastive strategies)::

    trainer = ContrastiveAlignmentTrainer(model, train_dataset, val_dataset)
    result = trainer.train(num_epochs=20, save_path="alignment.pt")

AdamW with a linear warm-up then cosine decay to 0 (CEIA: Adam, lr 5e-4, cosine, 20 epochs),
validation each epoch (loss, MSE, cosine, R@1/5/10 in both directions), deterministic for a seed.
``save_path`` is a Hugging Face checkpoint DIRECTORY (``config.json``, ``model.safetensors``, module
files, ``training_info.json``); a name ending in ``.pt`` is still used as the directory name (logged),
since the checkpoint is never a single pickle. While training, a resume file
``.<save_path name>.resume.pt`` next to it is refreshed after every epoch; rerunning the same call after a
crash continues from the last finished epoch, and the file is removed once the checkpoint is written.
Multi-process training goes through ``train_accelerate.py``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..evaluation.metrics import TimeWindows, bidirectional_recall, cosine_similarity, mse
from ..utils.io_utils import atomic_write_bytes, atomic_write_json

logger = logging.getLogger(__name__)

TRAINING_INFO_NAME = "training_info.json"


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
        resumed_from_epoch: epochs already done when this call started from a resume file, else ``None``.
    """

    history: list[dict[str, float]]
    initial_metrics: dict[str, float]
    final_metrics: dict[str, float]
    train_time_s: float
    save_path: Path | None = None
    resumed_from_epoch: int | None = None


def _pool(x: torch.Tensor) -> torch.Tensor:
    """``[B, D]`` stays, token-level ``[B, N, D]`` is mean-pooled for retrieval."""
    return x if x.dim() == 2 else x.mean(dim=1)


def _flat_rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1])


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class ContrastiveAlignmentTrainer:
    """Train an alignment model on an :class:`~modeling_evalign.data.alignment_dataset.AlignmentDataset`.

    Args:
        model: lightweight or contrastive alignment model (uniform interface above).
        train_dataset: items ``{"event_features", "target_features", "index"}``.
        val_dataset: optional, same item format; evaluated before training and after every epoch.
        lr: peak AdamW learning rate.
        batch_size: training batch size; must not exceed ``len(train_dataset)`` (the last incomplete
            batch of an epoch is dropped, so InfoNCE never sees a batch of one).
        weight_decay: AdamW weight decay.
        warmup_ratio: fraction of the steps with a linear warm-up before the cosine decay.
        max_grad_norm: gradient-norm clip, ``None`` for none.
        seed: seeds shuffling and the global torch RNG each epoch (dropout), so runs repeat exactly.
        device: ``None`` = CUDA when available, else CPU. Runtime only: never written into the config.
        eval_batch_size: batch size of validation passes.
        ks: recall cut-offs for validation.
        positive_group_key: per-sample metadata key of ``val_dataset`` (e.g. ``"sequence"``) whose
            equal values count as retrieval positives (see :mod:`modeling_evalign.evaluation.metrics`).
        overlap_positives: count same-sequence overlapping windows of ``val_dataset`` as retrieval
            positives (per-sample ``sequence``, ``window_start_us``, ``window_end_us``); consecutive DSEC
            windows overlap in content. Exclusive with ``positive_group_key``.
        num_workers: DataLoader workers.
        progress: show a tqdm progress bar.
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

    @torch.no_grad()
    def evaluate(
        self,
        dataset: Any | None = None,
        positive_groups: Any | None = None,
        positive_windows: TimeWindows | None = None,
    ) -> dict[str, float]:
        """Validation metrics of the current model on ``dataset`` (default: the validation set).

        Keys: ``loss`` (mean over batches, weighted by batch size), ``mse`` and ``cosine_similarity``
        (aligned vs target; token-level inputs compare token by token), and retrieval recall
        ``e2t/R@k``, ``t2e/R@k``, ``mean/R@k`` on pooled features (targets after the model's target
        head when it has one).
        """
        if dataset is None:
            dataset, positive_groups, positive_windows = self.val_dataset, self.positive_groups, self.positive_windows
        if dataset is None:
            raise ValueError("no dataset to evaluate: pass one or give the trainer a val_dataset")
        was_training = self.model.training
        self.model.to(self.device).eval()
        loader = DataLoader(dataset, batch_size=self.eval_batch_size, shuffle=False, num_workers=self.num_workers)
        loss_sum, count = 0.0, 0
        aligned_all, target_all, query_all, gallery_all = [], [], [], []
        try:
            for batch in loader:
                ev = batch["event_features"].to(self.device)
                tg = batch["target_features"].to(self.device)
                out = self.model(event_features=ev, target_features=tg)
                n = ev.shape[0]
                if out.loss is not None and n > 1:  # InfoNCE of a batch of one is meaningless
                    loss_sum += float(out.loss) * n
                    count += n
                aligned = out.aligned_features.float()
                aligned_all.append(_flat_rows(aligned).cpu())
                target_all.append(_flat_rows(tg).cpu())
                query_all.append(_pool(aligned).cpu())
                tg_emb = getattr(out, "target_embeddings", None)
                gallery_all.append((tg_emb if tg_emb is not None else _pool(tg)).float().cpu())
        finally:
            self.model.train(was_training)
        aligned, target = torch.cat(aligned_all), torch.cat(target_all)
        metrics: dict[str, float] = {"loss": loss_sum / count if count else float("nan")}
        if aligned.shape == target.shape:
            metrics["mse"] = mse(aligned, target)
            metrics["cosine_similarity"] = cosine_similarity(aligned, target)
        metrics.update(
            bidirectional_recall(
                torch.cat(query_all), torch.cat(gallery_all), ks=self.ks,
                positive_groups=positive_groups, positive_windows=positive_windows,
            )
        )
        return metrics

    # -- training -------------------------------------------------------------------------------

    def _fingerprint(self, num_epochs: int) -> dict[str, Any]:
        return {
            "num_epochs": num_epochs, "batch_size": self.batch_size, "lr": self.lr, "seed": self.seed,
            "weight_decay": self.weight_decay, "warmup_ratio": self.warmup_ratio,
            "train_size": len(self.train_dataset), "model_class": type(self.model).__name__,
        }

    def _schedule(self, optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
        warmup = int(self.warmup_ratio * total_steps)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total_steps - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def train(self, num_epochs: int = 20, save_path: str | os.PathLike | None = None) -> TrainingResult:
        """Train for ``num_epochs`` epochs; with ``save_path`` write the checkpoint directory there.

        Returns:
            :class:`TrainingResult` with per-epoch history and initial/final validation metrics.
        """
        from tqdm.auto import tqdm

        num_epochs = _positive_int(num_epochs, "num_epochs")
        save_dir = self._resolve_save_path(save_path)
        resume_file = None if save_dir is None else save_dir.parent / f".{save_dir.name}.resume.pt"
        start = time.perf_counter()
        self.model.to(self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"{type(self.model).__name__} has no trainable parameters")
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        steps_per_epoch = len(self.train_dataset) // self.batch_size
        scheduler = self._schedule(optimizer, num_epochs * steps_per_epoch)

        history: list[dict[str, float]] = []
        initial: dict[str, float] = {}
        first_epoch, resumed = 0, None
        state = self._load_resume(resume_file, num_epochs)
        if state is not None:
            self.model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            history, initial = state["history"], state["initial_metrics"]
            first_epoch = resumed = int(state["epoch"])
            logger.info("resuming from %s after epoch %d", resume_file, first_epoch)
        elif self.val_dataset is not None:
            initial = self.evaluate()

        bar = tqdm(total=num_epochs * steps_per_epoch, initial=first_epoch * steps_per_epoch,
                   desc="alignment training", unit="step", disable=not self.progress)
        with contextlib.closing(bar):
            for epoch in range(first_epoch, num_epochs):
                record = self._train_epoch(epoch, optimizer, scheduler, bar)
                if self.val_dataset is not None:
                    record.update({f"val/{k}": v for k, v in self.evaluate().items()})
                history.append(record)
                logger.info("epoch %d/%d: %s", epoch + 1, num_epochs,
                            ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch"))
                bar.set_postfix(loss=f"{record['train_loss']:.4f}",
                                **({"R@1": f"{record['val/mean/R@1']:.3f}"} if "val/mean/R@1" in record else {}))
                if resume_file is not None and epoch + 1 < num_epochs:
                    self._save_resume(resume_file, epoch + 1, num_epochs, optimizer, scheduler, history, initial)

        final = {k.removeprefix("val/"): v for k, v in history[-1].items() if k.startswith("val/")}
        result = TrainingResult(history, initial, final, time.perf_counter() - start, save_dir, resumed)
        if save_dir is not None:
            self._save_checkpoint(save_dir, num_epochs, result)
            if resume_file is not None:
                resume_file.unlink(missing_ok=True)
        return result

    def _train_epoch(self, epoch: int, optimizer, scheduler, bar) -> dict[str, float]:
        # seeding per epoch (not once) makes a resumed run identical to an uninterrupted one
        torch.manual_seed(self.seed * 100_003 + epoch)
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        loader = DataLoader(self.train_dataset, batch_size=self.batch_size, shuffle=True, drop_last=True,
                            generator=gen, num_workers=self.num_workers)
        self.model.train()
        t0, losses = time.perf_counter(), []
        for batch in loader:
            out = self.model(event_features=batch["event_features"].to(self.device),
                             target_features=batch["target_features"].to(self.device))
            if out.loss is None:
                raise ValueError(f"{type(self.model).__name__} returned no loss although target_features were given")
            if not torch.isfinite(out.loss):
                raise FloatingPointError(f"training loss became {float(out.loss)} at epoch {epoch + 1}: lower lr")
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            if self.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
            optimizer.step()
            scheduler.step()
            losses.append(float(out.loss.detach()))
            bar.update(1)
        return {"epoch": epoch + 1, "train_loss": sum(losses) / len(losses),
                "lr": scheduler.get_last_lr()[0], "seconds": time.perf_counter() - t0}

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

    def _save_resume(self, path: Path, epoch: int, num_epochs: int, optimizer, scheduler, history, initial) -> None:
        import io

        buf = io.BytesIO()
        torch.save({
            "fingerprint": self._fingerprint(num_epochs), "epoch": epoch, "model": self.model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "history": history, "initial_metrics": initial,
        }, buf)
        atomic_write_bytes(path, buf.getvalue())

    def _load_resume(self, path: Path | None, num_epochs: int) -> dict[str, Any] | None:
        if path is None or not path.is_file():
            return None
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state.get("fingerprint") != self._fingerprint(num_epochs):
            logger.warning("ignoring resume file %s: it belongs to a run with other settings (%s)",
                           path, state.get("fingerprint"))
            return None
        return state

    def _save_checkpoint(self, save_dir: Path, num_epochs: int, result: TrainingResult) -> None:
        import numpy
        import transformers

        from .. import __version__

        if not hasattr(self.model, "save_pretrained"):
            raise TypeError(f"{type(self.model).__name__} has no save_pretrained: cannot write {save_dir}")
        self.model.save_pretrained(save_dir)
        config = getattr(self.model, "config", None)
        n_params = sum(p.numel() for p in self.model.parameters())
        n_trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        ds = self.train_dataset
        info = {
            "strategy": getattr(config, "model_type", None),
            "model_class": type(self.model).__name__,
            "num_parameters": n_params,
            "num_trainable_parameters": n_trainable,
            "train_size": len(ds),
            "val_size": len(self.val_dataset) if self.val_dataset is not None else 0,
            "event_dim": getattr(config, "event_dim", getattr(ds, "event_dim", None)),
            "target_dim": getattr(config, "target_dim", getattr(ds, "target_dim", None)),
            "event_shape": list(getattr(ds, "event_shape", ())),
            "target_shape": list(getattr(ds, "target_shape", ())),
            "num_epochs": num_epochs,
            "hyperparameters": {
                "optimizer": "AdamW", "lr": self.lr, "batch_size": self.batch_size,
                "weight_decay": self.weight_decay, "schedule": "cosine", "warmup_ratio": self.warmup_ratio,
                "max_grad_norm": self.max_grad_norm, "seed": self.seed, "ks": list(self.ks),
            },
            "history": result.history,
            "initial_metrics": result.initial_metrics,
            "final_metrics": result.final_metrics,
            "retrieval_positives": self.positive_rule,
            "train_time_s": result.train_time_s,
            "resumed_from_epoch": result.resumed_from_epoch,
            "device_type": self.device.type,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": {
                "evalign": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                "numpy": numpy.__version__, "python": platform.python_version(),
            },
        }
        atomic_write_json(save_dir / TRAINING_INFO_NAME, info)


def training_result_to_dict(result: TrainingResult) -> dict[str, Any]:
    """JSON-ready dict of a :class:`TrainingResult`."""
    out = asdict(result)
    out["save_path"] = None if result.save_path is None else str(result.save_path)
    return out
