"""Resumable training checkpoints (``checkpoint-<step>`` directories, diffusers' layout).

A checkpoint holds everything needed to continue exactly where the run stopped::

    checkpoint-<step>/
        model.safetensors        trainable state only (LoRA runs: adapter + logit scale, never the frozen CLIP)
        adapter/                 LoRA runs: peft ``save_pretrained`` of the adapter (loads with plain peft)
        optimizer.pt, scheduler.pt
        rng_state_<rank>.pt      python / numpy / torch (/ cuda) generator states of every process
        trainer_state.json       step, epoch, position in the epoch, loss history; written LAST

Every process writes into ``.checkpoint-<step>.partial`` and the main process renames it once complete, then
moves the ``latest_checkpoint.txt`` pointer. A run killed at any moment therefore leaves the previous complete
checkpoint usable; directories without ``trainer_state.json`` are never picked by ``latest``.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.io_utils import atomic_write_json, atomic_write_text, replace_directory

STATE_NAME = "trainer_state.json"
LATEST_NAME = "latest_checkpoint.txt"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainerState:
    """Where a run is: ``epoch`` and ``step_in_epoch`` (batches done in it), ``global_step`` (optimizer steps).

    ``losses`` has one training loss per optimizer step; ``val_metrics`` one dict per finished epoch and
    ``history`` its record (``epoch`` 1-based, ``train_loss``, ``lr``, ``seconds``, ``val/<metric>``);
    ``extra`` is the caller's own resumable state (the trainer facade's settings and initial metrics).
    """

    strategy: str
    model_type: str
    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    losses: list[float] = field(default_factory=list)
    val_metrics: list[dict[str, float]] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    world_size: int = 1
    seed: int = 0
    complete: bool = True

    @classmethod
    def load(cls, directory: str | Path) -> TrainerState:
        path = Path(directory) / STATE_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: {directory} is not a complete evalign checkpoint")
        data = json.loads(path.read_text())
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def trainable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state a checkpoint must keep: ``model.trainable_state_dict()`` when defined, else the full state dict."""
    getter = getattr(model, "trainable_state_dict", None)
    state = getter() if callable(getter) else model.state_dict()
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def is_complete(directory: Path) -> bool:
    return directory.is_dir() and _CHECKPOINT_RE.match(directory.name) is not None and (directory / STATE_NAME).is_file()


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints in ``output_dir``, oldest first (half-written ones are skipped)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir() if is_complete(p)]
    return sorted(found, key=lambda p: int(_CHECKPOINT_RE.match(p.name).group(1)))


def find_latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint (the pointer file when it names a complete one, else a scan); None if none."""
    output_dir = Path(output_dir)
    pointer = output_dir / LATEST_NAME
    if pointer.is_file():
        name = pointer.read_text().strip()
        # only a bare checkpoint-<N> name is followed: the pointer can never lead outside output_dir
        if _CHECKPOINT_RE.match(name) and is_complete(output_dir / name):
            return output_dir / name
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def resolve_checkpoint(spec: str | None, output_dir: str | Path) -> Path | None:
    """``None`` -> no resume; ``'latest'`` -> newest complete checkpoint or None (fresh start); a path -> it,
    which must be a complete checkpoint (FileNotFoundError otherwise)."""
    if spec is None:
        return None
    if spec == "latest":
        return find_latest_checkpoint(output_dir)
    path = Path(spec)
    if not (path.is_dir() and (path / STATE_NAME).is_file()):
        raise FileNotFoundError(f"resume_from_checkpoint={spec!r} is not a complete checkpoint ({STATE_NAME} missing)")
    return path


def check_compatible(checkpoint: Path, strategy: str, model_type: str) -> TrainerState:
    """Load the checkpoint's TrainerState, raising ValueError when it belongs to another strategy/model type."""
    state = TrainerState.load(checkpoint)
    if state.strategy != strategy or state.model_type != model_type:
        raise ValueError(
            f"checkpoint {checkpoint} was written by strategy={state.strategy!r} (model_type={state.model_type!r}); "
            f"this run is strategy={strategy!r} (model_type={model_type!r})"
        )
    return state


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    accelerator,
    model: torch.nn.Module,
    optimizer,
    scheduler,
    state: TrainerState,
    output_dir: str | Path,
    total_limit: int | None = None,
) -> Path:
    """Write ``checkpoint-<global_step>`` atomically from every process (collective: all ranks must call it).

    ``model`` is the unwrapped model. Returns the final checkpoint path.
    """
    from safetensors.torch import save_file

    output_dir = Path(output_dir)
    final = output_dir / f"checkpoint-{state.global_step}"
    partial = output_dir / f".{final.name}.partial"
    if accelerator.is_main_process:
        clean_leftovers(output_dir)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(_rng_state(), partial / f"rng_state_{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_file(trainable_state_dict(model), str(partial / "model.safetensors"), metadata={"format": "pt"})
        save_adapter = getattr(model, "save_adapter", None)
        if callable(save_adapter):
            save_adapter(partial / "adapter")
        torch.save(optimizer.state_dict(), partial / "optimizer.pt")
        torch.save(scheduler.state_dict(), partial / "scheduler.pt")
        atomic_write_json(partial / STATE_NAME, asdict(state))  # completion marker: written last
        replace_directory(partial, final)
        atomic_write_text(output_dir / LATEST_NAME, final.name + "\n")
        if total_limit is not None:
            prune_checkpoints(output_dir, total_limit)
    accelerator.wait_for_everyone()
    return final


_LEFTOVER_RE = re.compile(r"^\.checkpoint-\d+\.(partial|deleting|old-[0-9a-f]+)$")


def clean_leftovers(output_dir: str | Path) -> list[Path]:
    """Remove what a kill left behind: half-written ``.checkpoint-N.partial``, half-deleted
    ``.checkpoint-N.deleting`` and swapped-out ``.checkpoint-N.old-*`` folders (main process, between saves)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    doomed = [p for p in output_dir.iterdir() if _LEFTOVER_RE.match(p.name) and p.is_dir() and not p.is_symlink()]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def prune_checkpoints(output_dir: str | Path, total_limit: int) -> list[Path]:
    """Delete the oldest complete checkpoints so at most ``total_limit`` remain; return the deleted paths."""
    found = list_checkpoints(output_dir)
    doomed = found[: max(0, len(found) - total_limit)]
    for path in doomed:
        # rename first so a kill mid-delete never leaves a checkpoint-N that looks complete but is not
        trash = path.parent / f".{path.name}.deleting"
        path.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
    return doomed


def _read(path: Path, load):
    """``load(path)``; a missing, truncated or corrupt file is a ValueError naming it (one line on the CLI)."""
    import pickle

    from safetensors import SafetensorError

    try:
        return load(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint file {path} is missing: resume from another checkpoint") from None
    except (SafetensorError, RuntimeError, EOFError, pickle.UnpicklingError, OSError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ValueError(f"checkpoint file {path} is truncated or corrupt ({first}): resume from an earlier "
                         "checkpoint (--resume_from_checkpoint PATH) or remove this one") from None


def load_checkpoint(accelerator, checkpoint: Path, model: torch.nn.Module, optimizer, scheduler) -> TrainerState:
    """Restore model (trainable state), optimizer, scheduler and this process's RNG; return the TrainerState."""
    from safetensors.torch import load_file

    state = TrainerState.load(checkpoint)
    weights = _read(checkpoint / "model.safetensors", lambda p: load_file(str(p)))
    loader = getattr(model, "load_trainable_state_dict", None)
    if callable(loader):
        loader(weights)
    else:
        model.load_state_dict(weights, strict=True)
    for name, target in (("optimizer.pt", optimizer), ("scheduler.pt", scheduler)):
        target.load_state_dict(_read(checkpoint / name,
                                     lambda p: torch.load(p, map_location="cpu", weights_only=True)))
    rng_file = checkpoint / f"rng_state_{accelerator.process_index}.pt"
    if state.world_size != accelerator.num_processes or not rng_file.is_file():
        raise ValueError(
            f"checkpoint {checkpoint} was written by {state.world_size} process(es); this run has "
            f"{accelerator.num_processes}: resume with the same number of processes"
        )
    _set_rng_state(torch.load(rng_file, weights_only=True))
    return state
