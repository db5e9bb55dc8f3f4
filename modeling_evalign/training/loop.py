"""The Accelerate training loop: one process or many (``accelerate launch``), resumable, SIGTERM-safe.

Distributed design: only the model and optimizer go through ``accelerator.prepare`` (DDP). The data order
is ours (:class:`~.data.ShardedBatchSampler`: the same global batches for any process count) and the LR
scheduler is stepped once per optimizer step by hand (accelerate's scheduler wrapper would step it once
per process). The contrastive losses gather features from every process with gradients (losses.ClipLoss),
so each process sees the negatives of the whole global batch.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..utils.io_utils import atomic_write_json
from .checkpointing import (
    TrainerState,
    check_compatible,
    list_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from .config import FEATURE_STRATEGIES, IMAGE_STRATEGIES, LABELLED_STRATEGIES, TrainConfig
from .data import MODEL_INPUTS, ShardedBatchSampler, TrainData, attach_labels, load_data, shard_indices

logger = logging.getLogger(__name__)

STRATEGY_MODEL_TYPES: dict[str, str] = {
    "lightweight": "evalign_lightweight",
    "contrastive": "evalign_contrastive",
    "contrastive_image": "evalign_contrastive_image",
    "triple_modal": "evalign_triple_modal",
    "triple_modal_image": "evalign_triple_modal_image",
}
TRAINING_INFO_NAME = "training_info.json"


@dataclass
class TrainResult:
    """Outcome of one run. ``losses``: training loss per optimizer step (mean over processes);
    ``val_metrics``: one dict per finished epoch; ``interrupted``: stopped early with a checkpoint."""

    output_dir: Path
    global_step: int
    losses: list[float] = field(default_factory=list)
    val_metrics: list[dict[str, float]] = field(default_factory=list)
    interrupted: bool = False
    checkpoint: Path | None = None


class _StopFlag:
    """Set by SIGTERM; training saves a checkpoint at the next step boundary and returns."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. some launchers): no handler, no clean stop
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def build_model(config: TrainConfig, data: TrainData | None = None, clip_model=None) -> torch.nn.Module:
    """The strategy model: feature strategies take their dims from ``data``; ``model_config`` overrides apply."""
    overrides = config.model_overrides()
    if config.strategy == "lightweight":
        from ..lightweight.configuration_lightweight import LightweightAlignmentConfig
        from ..lightweight.modeling_lightweight import LightweightAlignmentModule

        return LightweightAlignmentModule(
            LightweightAlignmentConfig(event_dim=data.event_dim, target_dim=data.target_dim, **overrides)
        )
    if config.strategy == "contrastive":
        from ..contrastive.configuration_contrastive import ContrastiveAlignmentConfig
        from ..contrastive.modeling_contrastive import ContrastiveAlignmentModule

        return ContrastiveAlignmentModule(
            ContrastiveAlignmentConfig(event_dim=data.event_dim, target_dim=data.target_dim, **overrides)
        )
    if config.strategy == "triple_modal":
        from ..triple_modal.configuration_triple_modal import TripleModalAlignmentConfig
        from ..triple_modal.modeling_triple_modal import TripleModalAlignmentModule

        return TripleModalAlignmentModule(TripleModalAlignmentConfig(
            event_dim=data.event_dim, target_dim=data.target_dim, class_names=data.class_names,
            text_model_id=config.text_model or config.clip_model, **overrides,
        ))
    lora = dict(clip_model_name_or_path=config.clip_model, clip_revision=config.clip_revision, lora_r=config.lora_r,
                lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout)
    if config.strategy == "triple_modal_image":
        from ..triple_modal.configuration_triple_modal_image import TripleModalImageAlignmentConfig
        from ..triple_modal.modeling_triple_modal_image import TripleModalImageAlignmentModel

        # text tower None -> the CLIP checkpoint itself (a full CLIP checkpoint holds both towers)
        return TripleModalImageAlignmentModel(TripleModalImageAlignmentConfig(
            **lora, class_names=data.class_names if data else None, text_model_name_or_path=config.text_model,
            **overrides,
        ), clip_model=clip_model)
    from ..contrastive.configuration_contrastive_image import ContrastiveImageAlignmentConfig
    from ..contrastive.modeling_contrastive_image import ContrastiveImageAlignmentModel

    return ContrastiveImageAlignmentModel(ContrastiveImageAlignmentConfig(**lora, **overrides), clip_model=clip_model)


def _make_accelerator(config: TrainConfig):
    from accelerate import Accelerator

    return Accelerator(
        cpu=config.cpu,
        mixed_precision=config.mixed_precision,
        log_with=config.log_with,
        project_dir=config.output_dir,
    )


def _loader(dataset, batch_sampler, config: TrainConfig, epoch: int):
    from torch.utils.data import DataLoader

    # Its own generator: a DataLoader iterator otherwise draws its worker base seed from the global torch RNG,
    # one draw more after a mid-epoch resume than in an uninterrupted run (dropout would then differ).
    generator = torch.Generator().manual_seed(config.seed + 1_000_003 * (epoch + 1))
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=config.num_workers, generator=generator)


@torch.no_grad()
def evaluate(accelerator, model, dataset, strategy: str, batch_size: int) -> dict[str, float]:
    """Validation metrics of ``model`` (unwrapped) on ``dataset``: mse, cosine, R@1/5/10 both directions.

    Each process encodes a contiguous shard; features are gathered so the retrieval gallery is the whole
    validation set. Every process returns the same dict.
    """
    from torch.utils.data import DataLoader, Subset

    from ..evaluation.metrics import bidirectional_recall, cosine_similarity, mse

    event_key, target_key = MODEL_INPUTS[strategy]
    indices, n_real = shard_indices(len(dataset), accelerator.process_index, accelerator.num_processes)
    was_training = model.training
    model.eval()
    aligned, targets = [], []
    for batch in DataLoader(Subset(dataset, indices), batch_size=batch_size):
        x = batch[event_key].to(accelerator.device)
        y = batch[target_key].to(accelerator.device)
        aligned.append(model(**{event_key: x}).aligned_features.float())
        targets.append(model.target_encoder(pixel_values=y).image_embeds.float() if strategy in IMAGE_STRATEGIES else y.float())
    model.train(was_training)
    local = torch.cat([torch.cat(aligned), torch.cat(targets)], dim=-1)
    count = torch.tensor([n_real], device=accelerator.device)
    gathered = accelerator.gather(local).cpu()
    counts = accelerator.gather(count).cpu().tolist()
    per = local.shape[0]
    rows = torch.cat([gathered[r * per : r * per + c] for r, c in enumerate(counts)])
    width = aligned[0].shape[-1]
    a, t = rows[..., :width], rows[..., width:]
    metrics = {}
    if a.shape == t.shape:  # token-level: mse/cosine per token, retrieval on the token means
        metrics = {"mse": mse(a.reshape(-1, width), t.reshape(-1, width)),
                   "cosine": cosine_similarity(a.reshape(-1, width), t.reshape(-1, width))}
    metrics.update(bidirectional_recall(a.mean(1) if a.dim() == 3 else a, t.mean(1) if t.dim() == 3 else t))
    return metrics


def _checkpoint_to_resume(config: TrainConfig) -> Path | None:
    """The checkpoint this run continues from (None: fresh start), validated against the strategy.

    A fresh start into a directory that already holds checkpoints is refused: their steps would interleave.
    """
    output_dir = Path(config.output_dir)
    checkpoint = resolve_checkpoint(config.resume_from_checkpoint, output_dir)
    if checkpoint is not None:
        check_compatible(checkpoint, config.strategy, STRATEGY_MODEL_TYPES[config.strategy])
    elif list_checkpoints(output_dir):
        raise ValueError(
            f"{output_dir} already holds checkpoints of an earlier run ({list_checkpoints(output_dir)[-1].name}): "
            "continue it with --resume_from_checkpoint latest, or use a new output_dir"
        )
    return checkpoint


def _flat_hparams(config: TrainConfig) -> dict[str, Any]:
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in config.to_dict().items()}


def train(config: TrainConfig, duration: str | None = None, data: TrainData | None = None, clip_model=None) -> TrainResult:
    """Train one run (``config`` already specialised to ``duration``, see :meth:`TrainConfig.for_duration`).

    ``data`` may be given directly (tests, notebooks); otherwise it is loaded from the config. Every input
    error (missing path, batch size, incompatible checkpoint) is raised before the first step.
    """
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    config.check_paths()
    output_dir = Path(config.output_dir)
    model_type = STRATEGY_MODEL_TYPES[config.strategy]
    checkpoint = _checkpoint_to_resume(config)

    accelerator = _make_accelerator(config)
    world, rank = accelerator.num_processes, accelerator.process_index
    set_seed(config.seed)
    if data is None:
        image_size = None
        if config.strategy in IMAGE_STRATEGIES:  # read from the tower's config: no weights loaded
            image_size = clip_model.config.image_size if clip_model is not None else _image_size(config)
        data = load_data(config, duration, image_size=image_size)
    if config.strategy in LABELLED_STRATEGIES and data.class_names is None:
        data = attach_labels(data, config.label_key)
    model = build_model(config, data, clip_model=clip_model)
    if config.closed_form_init is not None and checkpoint is None:
        _closed_form_warm_start(config, model, data)
    n_train = len(data.train)
    steps_per_epoch = len(ShardedBatchSampler(n_train, config.batch_size, rank, world, config.seed, 0))
    total_steps = steps_per_epoch * config.num_epochs

    from transformers import get_cosine_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)

    state = TrainerState(strategy=config.strategy, model_type=model_type, world_size=world, seed=config.seed)
    if checkpoint is not None:
        state = load_checkpoint(accelerator, checkpoint, unwrapped, optimizer, scheduler)
        logger.info("resumed from %s at step %d", checkpoint, state.global_step)
        if accelerator.is_main_process:  # resuming from an older checkpoint abandons the newer ones
            for stale in list_checkpoints(output_dir):
                if int(stale.name.rsplit("-", 1)[1]) > state.global_step:
                    logger.warning("removing %s: newer than the resumed %s", stale, checkpoint.name)
                    shutil.rmtree(stale)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        config.save(output_dir)
    if config.log_with:
        accelerator.init_trackers("evalign", config=_flat_hparams(config))

    event_key, target_key = MODEL_INPUTS[config.strategy]
    start = time.perf_counter()
    last_checkpoint = checkpoint
    interrupted = False
    progress = tqdm(total=total_steps, initial=state.global_step, disable=not accelerator.is_local_main_process,
                    desc=f"train {config.strategy}{' ' + duration if duration else ''}")

    def checkpoint_now() -> Path:
        return save_checkpoint(accelerator, unwrapped, optimizer, scheduler, state, output_dir,
                               config.checkpoints_total_limit)

    with _StopFlag() as stop:
        model.train()
        while state.epoch < config.num_epochs and not interrupted:
            sampler = ShardedBatchSampler(n_train, config.batch_size, rank, world, config.seed, state.epoch,
                                          start_batch=state.step_in_epoch)
            for batch in _loader(data.train, sampler, config, state.epoch):
                inputs = {event_key: batch[event_key].to(accelerator.device),
                          target_key: batch[target_key].to(accelerator.device)}
                if "labels" in batch:  # triple_modal: class indices for the event <-> text terms
                    inputs["labels"] = batch["labels"].to(accelerator.device)
                loss = model(**inputs).loss
                accelerator.backward(loss)
                if config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step_loss = accelerator.reduce(loss.detach().float(), reduction="mean").item()
                state.losses.append(step_loss)
                state.global_step += 1
                state.step_in_epoch += 1
                progress.update(1)
                progress.set_postfix(loss=f"{step_loss:.4f}", epoch=state.epoch)
                if config.log_with:
                    accelerator.log({"train/loss": step_loss, "train/lr": scheduler.get_last_lr()[0]},
                                    step=state.global_step)
                stop_requested = _any_process(accelerator, stop.requested)
                at_limit = config.stop_at_step is not None and state.global_step >= config.stop_at_step
                if state.global_step % config.checkpointing_steps == 0 or stop_requested or at_limit:
                    last_checkpoint = checkpoint_now()
                    if accelerator.is_main_process:
                        print(f"[evalign] checkpoint saved: {last_checkpoint}", flush=True)
                if stop_requested or at_limit:
                    interrupted = True
                    break
            if interrupted:
                break
            metrics = evaluate(accelerator, unwrapped, data.val, config.strategy, config.batch_size) if data.val else {}
            state.val_metrics.append({"epoch": state.epoch, **metrics})
            if config.log_with and metrics:
                accelerator.log({f"val/{k}": v for k, v in metrics.items()}, step=state.global_step)
            state.epoch += 1
            state.step_in_epoch = 0
    progress.close()
    elapsed = time.perf_counter() - start
    result = TrainResult(output_dir, state.global_step, list(state.losses), list(state.val_metrics), interrupted,
                         last_checkpoint)
    if not interrupted:
        _finish(accelerator, config, unwrapped, state, data, duration, elapsed, resumed_from=checkpoint)
    if config.log_with:
        accelerator.end_training()
    return result


def _closed_form_warm_start(config: TrainConfig, model, data: TrainData) -> None:
    """Ridge solution of the whole training split as the starting point (every process computes the same)."""
    rows = [data.train[i] for i in range(len(data.train))]
    event = torch.stack([r["event_features"] for r in rows]).double()
    target = torch.stack([r["target_features"] for r in rows]).double()
    model.fit_closed_form(event, target, ridge=config.closed_form_init)


def _any_process(accelerator, flag: bool) -> bool:
    """True on every process when ``flag`` is true on any (a SIGTERM may reach only some processes)."""
    if accelerator.num_processes == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(t, reduction="sum").item() > 0)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("evalign", "torch", "transformers", "accelerate", "peft", "datasets"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


def _epoch_history(state: TrainerState, steps_per_epoch: int) -> list[dict[str, float]]:
    history = []
    for i, val in enumerate(state.val_metrics):
        losses = state.losses[i * steps_per_epoch : (i + 1) * steps_per_epoch]
        entry = {"epoch": i, "train_loss": sum(losses) / max(1, len(losses))}
        entry.update({f"val_{k}": v for k, v in val.items() if k != "epoch"})
        history.append(entry)
    return history


def _finish(accelerator, config: TrainConfig, model, state: TrainerState, data: TrainData, duration, elapsed,
            resumed_from: Path | None = None):
    """Final directory: save_pretrained, adapter / merged export, training_info.json, card, optional push."""
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    out = Path(config.output_dir) / "final"
    model.save_pretrained(out)
    if hasattr(model, "save_adapter"):
        model.save_adapter(out / "adapter")
        if config.export_merged:
            model.export_merged(Path(config.output_dir) / "merged")
    steps_per_epoch = len(state.losses) // max(1, len(state.val_metrics)) if state.val_metrics else len(state.losses)
    final_metrics = {k: v for k, v in (state.val_metrics[-1] if state.val_metrics else {}).items() if k != "epoch"}
    info = {
        "strategy": config.strategy,
        "model_type": STRATEGY_MODEL_TYPES[config.strategy],
        "durations": [duration] if duration else [],
        "data": data.source,
        "counts": {"train": len(data.train), "val": len(data.val) if data.val is not None else 0},
        "dims": {"event_dim": data.event_dim, "target_dim": data.target_dim},
        "num_epochs": config.num_epochs,
        "global_batch_size": config.batch_size,
        "num_processes": accelerator.num_processes,
        "global_steps": state.global_step,
        "losses": state.losses,
        "history": _epoch_history(state, steps_per_epoch),
        "final_metrics": final_metrics,
        "train_time_s": round(elapsed, 3),  # this session only (a resumed run counts from the resume)
        "resumed_from": str(resumed_from) if resumed_from else None,
        "versions": _versions(),
        "train_config": config.to_dict(),
    }
    atomic_write_json(out / TRAINING_INFO_NAME, info)
    _card_and_push(config, out, info, duration)


def _card_and_push(config: TrainConfig, out: Path, info: dict, duration: str | None) -> None:
    """Model card (cards.write_model_card) and Hub push (hub.push_to_hub) when those modules are installed."""
    try:
        from ..hub.cards import write_model_card
    except ImportError:  # optional helper module absent in a trimmed install
        write_model_card = None
    model_id = config.hub_model_id or f"evalign/{config.strategy}{'-' + duration if duration else ''}"
    if write_model_card is not None:
        metrics = {duration: info["final_metrics"]} if duration else info["final_metrics"]
        base_model = config.clip_model if config.strategy in IMAGE_STRATEGIES else None
        try:
            write_model_card(out, model_id=model_id, strategy=config.strategy, metrics=metrics, training_info=info,
                             datasets=["dsec"] if config.dsec_data_dir else [], base_model=base_model)
        except ImportError as exc:  # plotting extras missing: the card is optional, the checkpoint is not
            logger.warning("model card skipped: %s", exc)
    if config.push_to_hub:
        from ..hub.push import push_to_hub

        push_to_hub(out, model_id)


def _image_size(config: TrainConfig) -> int:
    """Input size of the referenced CLIP vision tower (read from its config; no weights loaded)."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig.from_pretrained(config.clip_model, revision=config.clip_revision).image_size


def run(config: TrainConfig) -> list[TrainResult]:
    """One training per duration (output in ``output_dir/<duration>``), or one run on feature directories.

    Every run's inputs are checked and its data loaded before the first training starts, so a bad path,
    an incompatible checkpoint or a batch larger than one duration's data fails fast, not hours later.
    """
    from accelerate import PartialState

    runs = [config.for_duration(d) for d in config.runs()]
    loaded = []
    state = PartialState(cpu=config.cpu)
    for run_config, duration in zip(runs, config.runs()):
        run_config.check_paths()
        _checkpoint_to_resume(run_config)
        image_size = None if run_config.strategy in FEATURE_STRATEGIES else _image_size(run_config)
        with state.main_process_first():  # one process prepares the builder cache / extracts features
            data = load_data(run_config, duration, image_size=image_size)
        if run_config.batch_size > len(data.train):
            raise ValueError(
                f"batch_size={run_config.batch_size} is larger than the training data of "
                f"{duration or run_config.train_dir} ({len(data.train)} samples)"
            )
        loaded.append(data)
    return [train(rc, duration=d, data=data) for rc, d, data in zip(runs, config.runs(), loaded)]


__all__ = ["STRATEGY_MODEL_TYPES", "TrainResult", "build_model", "evaluate", "run", "train"]
