"""THE training loop of evalign: one process or many (``accelerate launch``), resumable, SIGTERM-safe.

Every trainer goes through :func:`train`: ``train_accelerate.py`` (via :func:`run`), the brief's
``ContrastiveAlignmentTrainer`` (``training.trainer``, a facade passing :class:`RunOptions`) and
``train_triple_modal``. Optimizer and schedule: ``training.schedule``; checkpoints and resume:
``training.checkpointing``; the final directory and training_info.json: ``training.finish``.

Distributed design: the process group comes from the launcher's environment whatever the device
(:func:`use_cpu`: no GPU -> gloo on CPU). Only the model and optimizer go through ``accelerator.prepare``
(DDP). The data order is ours (:class:`~.data.ShardedBatchSampler`: the same global batches for any process
count) and the LR scheduler is stepped once per optimizer step by hand (accelerate's scheduler wrapper would
step it once per process). The contrastive losses gather features from every process with gradients
(losses.ClipLoss), so each process sees the negatives of the whole global batch. Only the main process writes
files (checkpoint weights, final/, card); every process writes its own RNG state into a checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..utils.progress import progress_bar
from .checkpointing import (
    TrainerState,
    check_compatible,
    list_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from .config import TrainConfig
from .data import ShardedBatchSampler, TrainData, attach_labels, load_data
from .evaluation import evaluate
from .finish import TRAINING_INFO_NAME, write_final
from .models import build_model, closed_form_warm_start, image_size
from .schedule import make_optimizer, make_schedule

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Outcome of one run. ``losses``: training loss per optimizer step (mean over processes);
    ``val_metrics``: one dict per finished epoch; ``history``: per-epoch records (see TrainerState);
    ``interrupted``: stopped early with a checkpoint (``signalled``: by SIGTERM, not by ``stop_at_step``);
    ``final_dir``: the final checkpoint (None if not written)."""

    output_dir: Path
    global_step: int
    losses: list[float] = field(default_factory=list)
    val_metrics: list[dict[str, float]] = field(default_factory=list)
    interrupted: bool = False
    checkpoint: Path | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    steps_per_epoch: int = 0
    resumed_from_step: int | None = None
    final_dir: Path | None = None
    signalled: bool = False


@dataclass
class RunOptions:
    """What a caller other than the command line changes in one :func:`train` run.

    ``model``: train this (already built) model in place instead of ``build_model(config)``. ``evaluate``:
    per-epoch validation ``evaluate(model) -> metrics`` instead of :func:`.evaluation.evaluate` (single
    process). ``final_dir``: where the final checkpoint goes (default ``output_dir/final``); ``save_final``
    False writes none. ``extra_state``: kept in every checkpoint (``TrainerState.extra``). ``info_extra``:
    fields added to training_info.json. ``model_card``: write the card (and push when configured).
    """

    model: torch.nn.Module | None = None
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None
    final_dir: Path | None = None
    save_final: bool = True
    model_card: bool = True
    extra_state: dict[str, Any] = field(default_factory=dict)
    info_extra: dict[str, Any] | None = None
    progress: bool = True
    announce_checkpoints: bool = True  # "[evalign] checkpoint saved: ..." on stdout (the CLI's resumability marker)


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


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def _has_accelerator_device() -> bool:
    accel = getattr(torch, "accelerator", None)
    if accel is not None and hasattr(accel, "is_available"):
        return bool(accel.is_available())
    return torch.cuda.is_available()


def use_cpu(config: TrainConfig) -> bool:
    """Train on CPU: ``--cpu``, ``ACCELERATE_USE_CPU=1``, or a launcher started several processes on a machine
    without GPU (then they form one gloo group instead of each training alone). With GPUs, unchanged (NCCL)."""
    if config.cpu or _env_flag("ACCELERATE_USE_CPU"):
        return True
    launched = int(os.environ.get("LOCAL_RANK", "-1")) != -1 or int(os.environ.get("WORLD_SIZE", "1")) > 1
    return launched and not _has_accelerator_device()


def _distributed_state(config: TrainConfig):
    """accelerate's process state for this config (created once per process; a single-process state of the
    other device kind is rebuilt, e.g. a CUDA trainer run followed by a ``--cpu`` run in one notebook)."""
    from accelerate.state import AcceleratorState, DistributedType, PartialState

    cpu = use_cpu(config)
    shared = PartialState._shared_state
    if shared and shared.get("distributed_type") == DistributedType.NO and bool(shared.get("_cpu")) != cpu:
        AcceleratorState._reset_state(reset_partial_state=True)
    return PartialState(cpu=cpu)


def _make_accelerator(config: TrainConfig):
    from accelerate import Accelerator

    _distributed_state(config)
    return Accelerator(cpu=use_cpu(config), mixed_precision=config.mixed_precision, log_with=config.log_with,
                       project_dir=config.output_dir)


def _loader(dataset, batch_sampler, config: TrainConfig, epoch: int):
    from torch.utils.data import DataLoader

    # Its own generator: a DataLoader iterator otherwise draws its worker base seed from the global torch RNG,
    # one draw more after a mid-epoch resume than in an uninterrupted run (dropout would then differ).
    generator = torch.Generator().manual_seed(config.seed + 1_000_003 * (epoch + 1))
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=config.num_workers, generator=generator)


def _checkpoint_to_resume(config: TrainConfig) -> Path | None:
    """The checkpoint this run continues from (None: fresh start), validated against the strategy.

    A fresh start into a directory that already holds checkpoints is refused: their steps would interleave.
    """
    output_dir = Path(config.output_dir)
    checkpoint = resolve_checkpoint(config.resume_from_checkpoint, output_dir)
    if checkpoint is not None:
        check_compatible(checkpoint, config.strategy, config.spec.model_type)
    elif list_checkpoints(output_dir):
        raise ValueError(
            f"{output_dir} already holds checkpoints of an earlier run ({list_checkpoints(output_dir)[-1].name}): "
            "continue it with --resume_from_checkpoint latest, or use a new output_dir"
        )
    return checkpoint


def _flat_hparams(config: TrainConfig) -> dict[str, Any]:
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in config.to_dict().items()}


def _prepare_data(config: TrainConfig, duration: str | None, data: TrainData | None, clip_model) -> TrainData:
    if data is None:
        size = None
        if config.spec.data_kind == "images":  # read from the tower's config: no weights loaded
            size = clip_model.config.image_size if clip_model is not None else image_size(config)
        data = load_data(config, duration, image_size=size)
    if config.spec.needs_labels and data.class_names is None:
        data = attach_labels(data, config.label_key)
    return data


def train(config: TrainConfig, duration: str | None = None, data: TrainData | None = None, clip_model=None,
          options: RunOptions | None = None) -> TrainResult:
    """Train one run (``config`` already specialised to ``duration``, see :meth:`TrainConfig.for_duration`).

    ``data`` may be given directly (tests, notebooks, the trainer facade); otherwise it is loaded from the
    config. Every input error (missing path, batch size, incompatible checkpoint) is raised before the first step.
    """
    from accelerate.utils import set_seed

    options = options or RunOptions()
    config.check_paths(data_dirs=data is None)
    output_dir = Path(config.output_dir)
    checkpoint = _checkpoint_to_resume(config)

    accelerator = _make_accelerator(config)
    world, rank = accelerator.num_processes, accelerator.process_index
    set_seed(config.seed)
    data = _prepare_data(config, duration, data, clip_model)
    model = options.model if options.model is not None else build_model(config, data, clip_model=clip_model)
    if config.closed_form_init is not None and checkpoint is None:
        closed_form_warm_start(config, model, data)
    # the training RNG stream (dropout) starts here whoever built the model (CLI, trainer facade), so the
    # same seed and data give the same run on every path; a stream of its own, not the init's draws again
    set_seed(config.seed + 1)
    n_train = len(data.train)
    steps_per_epoch = len(ShardedBatchSampler(n_train, config.batch_size, rank, world, config.seed, 0))
    total_steps = steps_per_epoch * config.num_epochs

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, config.learning_rate, config.weight_decay)
    scheduler = make_schedule(optimizer, config.warmup_steps, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)

    state = TrainerState(strategy=config.strategy, model_type=config.spec.model_type, world_size=world,
                         seed=config.seed, extra=dict(options.extra_state))
    if checkpoint is not None:
        state = load_checkpoint(accelerator, checkpoint, unwrapped, optimizer, scheduler)
        logger.info("resumed from %s at step %d", checkpoint, state.global_step)
        if accelerator.is_main_process:  # resuming from an older checkpoint abandons the newer ones
            for stale in list_checkpoints(output_dir):
                if int(stale.name.rsplit("-", 1)[1]) > state.global_step:
                    logger.warning("removing %s: newer than the resumed %s", stale, checkpoint.name)
                    shutil.rmtree(stale)
    resumed_from_step = state.global_step if checkpoint is not None else None
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        config.save(output_dir)
    if config.log_with:
        accelerator.init_trackers("evalign", config=_flat_hparams(config))

    def validate() -> dict[str, float]:
        if options.evaluate is not None:
            return options.evaluate(unwrapped)
        if not data.val:
            return {}
        return evaluate(unwrapped, data.val, strategy=config.strategy, batch_size=config.batch_size,
                        device=accelerator.device, accelerator=accelerator)

    event_key, target_key = config.spec.inputs
    start = time.perf_counter()
    last_checkpoint = checkpoint
    interrupted = signalled = False
    progress = progress_bar(total=total_steps, initial=state.global_step, unit="step",
                            disable=not (accelerator.is_local_main_process and options.progress),
                            desc=f"train {config.strategy}{' ' + duration if duration else ''}")

    with _StopFlag() as stop, progress:
        model.train()
        while state.epoch < config.num_epochs and not interrupted:
            epoch_start = time.perf_counter()
            sampler = ShardedBatchSampler(n_train, config.batch_size, rank, world, config.seed, state.epoch,
                                          start_batch=state.step_in_epoch)
            for batch in _loader(data.train, sampler, config, state.epoch):
                inputs = {event_key: batch[event_key].to(accelerator.device),
                          target_key: batch[target_key].to(accelerator.device)}
                if "labels" in batch:  # triple_modal: class indices for the event <-> text terms
                    inputs["labels"] = batch["labels"].to(accelerator.device)
                loss = model(**inputs).loss
                if loss is None:
                    raise ValueError(f"{type(unwrapped).__name__} returned no loss although targets were given")
                accelerator.backward(loss)
                if config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step_loss = accelerator.reduce(loss.detach().float(), reduction="mean").item()
                if not math.isfinite(step_loss):  # the same reduced value on every process: all stop together
                    raise FloatingPointError(f"training loss became {step_loss} at step {state.global_step + 1} "
                                             f"(epoch {state.epoch + 1}): lower the learning rate")
                state.losses.append(step_loss)
                state.global_step += 1
                state.step_in_epoch += 1
                progress.update(1)
                progress.set_postfix(loss=f"{step_loss:.4f}", epoch=state.epoch, refresh=False)
                if config.log_with:
                    accelerator.log({"train/loss": step_loss, "train/lr": scheduler.get_last_lr()[0]},
                                    step=state.global_step)
                stop_requested = _any_process(accelerator, stop.requested)
                at_limit = config.stop_at_step is not None and state.global_step >= config.stop_at_step
                if state.global_step % config.checkpointing_steps == 0 or stop_requested or at_limit:
                    last_checkpoint = save_checkpoint(accelerator, unwrapped, optimizer, scheduler, state, output_dir,
                                                      config.checkpoints_total_limit)
                    if accelerator.is_main_process and options.announce_checkpoints:
                        print(f"[evalign] checkpoint saved: {last_checkpoint}", flush=True)
                if stop_requested or at_limit:
                    interrupted, signalled = True, stop_requested
                    break
            if interrupted:
                break
            metrics = validate()
            state.val_metrics.append({"epoch": state.epoch, **metrics})
            epoch_losses = state.losses[state.epoch * steps_per_epoch : state.global_step]
            state.history.append({
                "epoch": state.epoch + 1, "train_loss": sum(epoch_losses) / max(1, len(epoch_losses)),
                "lr": scheduler.get_last_lr()[0], "seconds": time.perf_counter() - epoch_start,
                **{f"val/{k}": v for k, v in metrics.items()},
            })
            if config.log_with and metrics:
                accelerator.log({f"val/{k}": v for k, v in metrics.items()}, step=state.global_step)
            state.epoch += 1
            state.step_in_epoch = 0
    elapsed = time.perf_counter() - start
    result = TrainResult(output_dir, state.global_step, list(state.losses), list(state.val_metrics), interrupted,
                         last_checkpoint, list(state.history), steps_per_epoch, resumed_from_step,
                         signalled=signalled)
    if not interrupted and options.save_final:
        result.final_dir = write_final(accelerator, config, unwrapped, state, data, steps_per_epoch=steps_per_epoch,
                                       elapsed=elapsed, duration=duration, resumed_from=checkpoint,
                                       final_dir=options.final_dir, model_card=options.model_card,
                                       info_extra=options.info_extra)
    if config.log_with:
        accelerator.end_training()
    return result


def _any_process(accelerator, flag: bool) -> bool:
    """True on every process when ``flag`` is true on any (a SIGTERM may reach only some processes)."""
    if accelerator.num_processes == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(t, reduction="sum").item() > 0)


def run(config: TrainConfig) -> list[TrainResult]:
    """One training per duration (output in ``output_dir/<duration>``), or one run on feature directories.

    Every run's inputs are checked and its data loaded before the first training starts, so a bad path,
    an incompatible checkpoint or a batch larger than one duration's data fails fast, not hours later.
    """
    runs = [config.for_duration(d) for d in config.runs()]
    loaded = []
    state = _distributed_state(config)
    for run_config, duration in zip(runs, config.runs()):
        run_config.check_paths()
        _checkpoint_to_resume(run_config)
        size = image_size(run_config) if run_config.spec.data_kind == "images" else None
        with state.main_process_first():  # one process prepares the builder cache / extracts features
            data = load_data(run_config, duration, image_size=size)
        if run_config.batch_size > len(data.train):
            raise ValueError(
                f"batch_size={run_config.batch_size} is larger than the training data of "
                f"{duration or run_config.train_dir} ({len(data.train)} samples)"
            )
        loaded.append(data)
    return [train(rc, duration=d, data=data) for rc, d, data in zip(runs, config.runs(), loaded)]


__all__ = ["TRAINING_INFO_NAME", "RunOptions", "TrainResult", "build_model", "evaluate",
           "run", "train", "use_cpu"]
