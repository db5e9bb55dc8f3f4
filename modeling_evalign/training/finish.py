"""The end of a run: the final checkpoint directory, THE training_info.json writer, model card and Hub push.

Collective: every process calls :func:`write_final`; only the main process writes, the others wait at a
barrier before and after, so when it returns the final directory is complete on every process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ..hub.paths import strip_machine_paths
from ..utils.io_utils import atomic_write_json, atomic_write_text
from .checkpointing import TrainerState
from .config import TrainConfig
from .data import TrainData

logger = logging.getLogger(__name__)

TRAINING_INFO_NAME = "training_info.json"


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("evalign", "torch", "transformers", "accelerate", "peft", "datasets", "numpy"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


def training_info(config: TrainConfig, model: torch.nn.Module, state: TrainerState, data: TrainData, *,
                  num_processes: int, steps_per_epoch: int, elapsed: float, duration: str | None = None,
                  resumed_from: Path | None = None, device_type: str = "cpu",
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The content of training_info.json (``extra``: caller-specific fields, added last)."""
    final_metrics = {k: v for k, v in (state.val_metrics[-1] if state.val_metrics else {}).items() if k != "epoch"}
    info = {
        "strategy": config.strategy,
        "model_type": config.spec.model_type,
        "model_class": type(model).__name__,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "num_trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "durations": [duration] if duration else [],
        "data": data.source,
        "counts": {"train": len(data.train), "val": len(data.val) if data.val is not None else 0},
        "dims": {"event_dim": data.event_dim, "target_dim": data.target_dim},
        "num_epochs": config.num_epochs,
        "num_processes": num_processes,
        "global_batch_size": config.batch_size,
        "per_process_batch_size": config.batch_size // num_processes,
        "steps_per_epoch": steps_per_epoch,
        "global_steps": state.global_step,
        "hyperparameters": {
            "optimizer": "AdamW", "lr": config.learning_rate, "batch_size": config.batch_size,
            "weight_decay": config.weight_decay, "schedule": "cosine", "warmup_steps": config.warmup_steps,
            "max_grad_norm": config.max_grad_norm, "seed": config.seed,
        },
        "losses": state.losses,
        "history": state.history,
        "final_metrics": final_metrics,
        "train_time_s": round(elapsed, 3),  # this session only (a resumed run counts from the resume)
        "resumed_from": str(resumed_from) if resumed_from else None,
        "device_type": device_type,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "train_config": config.to_dict(),
    }
    info.update(extra or {})
    return info


def write_final(accelerator, config: TrainConfig, model: torch.nn.Module, state: TrainerState, data: TrainData, *,
                steps_per_epoch: int, elapsed: float, duration: str | None = None, resumed_from: Path | None = None,
                final_dir: Path | None = None, model_card: bool = True,
                info_extra: dict[str, Any] | None = None) -> Path:
    """``save_pretrained`` (+ LoRA adapter / merged export), training_info.json, card, optional push.

    ``final_dir`` defaults to ``output_dir/final``. Returns it (on every process).
    """
    out = Path(final_dir) if final_dir is not None else Path(config.output_dir) / "final"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if not hasattr(model, "save_pretrained"):
            raise TypeError(f"{type(model).__name__} has no save_pretrained: cannot write {out}")
        model.save_pretrained(out)
        if hasattr(model, "save_adapter"):
            model.save_adapter(out / "adapter")
            if config.export_merged:
                model.export_merged(Path(config.output_dir) / "merged")
        info = training_info(config, model, state, data, num_processes=accelerator.num_processes,
                             steps_per_epoch=steps_per_epoch, elapsed=elapsed, duration=duration,
                             resumed_from=resumed_from, device_type=accelerator.device.type, extra=info_extra)
        facts = _card_facts(config, model, data, info)
        if facts is not None:  # kept with the checkpoint, so a later card (e.g. with test metrics) states them too
            info["card"] = strip_machine_paths(facts, out, name_only=True)
        strip_checkpoint_paths(out)
        atomic_write_json(out / TRAINING_INFO_NAME, strip_machine_paths(info, out))
        if model_card:
            _card_and_push(config, out, info, duration, facts)
    accelerator.wait_for_everyone()  # the others return only once final/ is complete
    return out


def strip_checkpoint_paths(out: Path) -> None:
    """No machine path in what ``save_pretrained`` wrote: tower references in config.json (and a LoRA adapter's
    base model) become the tower's name (a local tower is re-attached with ``hub.paths.point_tower_at`` or a
    ``from_pretrained`` override); peft's template README of the adapter (placeholders) is dropped, the
    checkpoint's card describes it."""
    for name in ("config.json", "adapter/adapter_config.json"):
        path = out / name
        if path.is_file():
            data = json.loads(path.read_text())
            clean = strip_machine_paths(data, out, name_only=True)
            if clean != data:
                atomic_write_text(path, json.dumps(clean, indent=2, sort_keys=True) + "\n")
    (out / "adapter" / "README.md").unlink(missing_ok=True)


def _card_facts(config: TrainConfig, model: torch.nn.Module, data: TrainData, info: dict) -> dict | None:
    """The card's facts (tower, input contract, data, evaluation) while paths are still local; a fact that
    cannot be gathered leaves the card without it, never the checkpoint unwritten."""
    from ..hub.card_facts import gather

    try:
        return gather(config, model, data, info)
    except (OSError, ValueError, RuntimeError, TypeError, KeyError) as exc:
        logger.warning("model card facts incomplete: %s", exc)
        return None


def _card_and_push(config: TrainConfig, out: Path, info: dict, duration: str | None, facts: dict | None = None) -> None:
    """Model card (hub.cards.write_model_card) and Hub push (hub.push.push_to_hub)."""
    try:
        from ..hub.cards import write_model_card
    except ImportError:  # optional helper module absent in a trimmed install
        write_model_card = None
    model_id = config.hub_model_id or f"evalign/{config.strategy}{'-' + duration if duration else ''}"
    if write_model_card is not None:
        metrics = {duration: info["final_metrics"]} if duration else info["final_metrics"]
        base_model = config.clip_model if config.spec.data_kind == "images" else None
        recordings = ((facts or {}).get("data") or {}).get("recordings") or {}
        real_dsec = config.dsec_data_dir and recordings.get("synthetic") is False  # synthetic data is not "dsec"
        try:
            write_model_card(out, model_id=model_id, strategy=config.strategy, metrics=metrics, training_info=info,
                             datasets=["dsec"] if real_dsec else [], base_model=base_model, facts=facts)
        except ImportError as exc:  # plotting extras missing: the card is optional, the checkpoint is not
            logger.warning("model card skipped: %s", exc)
    if config.push_to_hub:
        from ..hub.push import push_to_hub

        push_to_hub(out, model_id)
