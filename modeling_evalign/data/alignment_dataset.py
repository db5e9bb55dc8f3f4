"""Paired pre-extracted features (event side, target side) as a torch ``Dataset``.

Directory format (written by :meth:`AlignmentDataset.save_to_directory` and by the feature
extraction script; read by :meth:`AlignmentDataset.from_directory`)::

    features/train/
        event_features.safetensors    one tensor, key "features" (any single key accepted),
                                      shape [N, De] (pooled) or [N, T, De] (token-level)
        target_features.safetensors   same, shape [N, Dt] or [N, T', Dt]
        metadata.json                 optional, see below

Instead of ``.safetensors`` each side may be a ``.pt`` file holding a tensor, or a dict with a
``"features"`` tensor; it is read with ``torch.load(weights_only=True)``, so a file that needs a
foreign class to unpickle is refused (never loaded with ``weights_only=False``). When both exist the
``.safetensors`` file wins. Features must be floating point (stored in any float dtype; items come
out as float32). Row ``i`` of the event file is paired with row ``i`` of the target file.

``metadata.json`` (all keys optional)::

    {"num_samples": N, "event_dim": De, "target_dim": Dt, "event_shape": [De] or [T, De], "target_shape": ...,
     "samples": [{"sequence": "zurich_city_00_a", "window_start_us": 0, "window_end_us": 1000000,
                  "label": ..., ...}, ...],          # one dict per row, any JSON fields
     ...}                                            # anything else is kept as-is

``num_samples``/``event_dim``/``target_dim``/``event_shape``/``target_shape`` and the length of ``samples`` are checked against the
tensors. Safetensors files are memory-mapped (copy-on-write), so a large file is paged in as rows
are read instead of loaded whole; the finiteness check streams through it in blocks. Reading the files
(and the truncation check) lives in :mod:`.feature_files`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.errors import InputKeyError, InputTypeError
from ..utils.io_utils import atomic_directory, atomic_write_json
from .feature_files import EVENT_STEM, METADATA_FILE, TARGET_STEM, find_feature_file, read_features

logger = logging.getLogger(__name__)

_CHECK_BLOCK_ELEMENTS = 2**24  # finiteness check reads this many elements at a time


def _check_features(t: Any, name: str) -> torch.Tensor:
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(t)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor or numpy array, got {type(t).__name__}")
    if not t.is_floating_point():
        raise InputTypeError(f"{name} has dtype {t.dtype}: expected floating point features")
    if t.dim() not in (2, 3) or t.shape[0] == 0 or t.shape[-1] == 0:
        raise ValueError(f"{name} has shape {tuple(t.shape)}: expected [N, D] or [N, T, D] with N, D > 0")
    return t.detach()


def _first_non_finite_row(t: torch.Tensor) -> int | None:
    """Index of the first row holding NaN/inf, streaming through ``t`` in blocks (works on mmaps)."""
    row_elements = max(1, t[0].numel())
    step = max(1, _CHECK_BLOCK_ELEMENTS // row_elements)
    for start in range(0, t.shape[0], step):
        block = t[start : start + step]
        ok = torch.isfinite(block).reshape(block.shape[0], -1).all(dim=1)
        if not bool(ok.all()):
            return start + int((~ok).nonzero()[0, 0])
    return None


class AlignmentDataset(torch.utils.data.Dataset):
    """Paired event/target features; item ``i`` is ``{"event_features", "target_features", "index"}``.

    Args:
        event_features: ``[N, De]`` or ``[N, T, De]`` float tensor (or numpy array).
        target_features: ``[N, Dt]`` or ``[N, T', Dt]``.
        metadata: ``None``, a metadata dict (format in the module docstring) or a list of N per-sample dicts.
        validate: check for NaN/inf (names the first bad row). Shapes are always checked.
        source_names: names used in error messages (file paths when read from a directory).

    Items hold float32 tensors ``[De]``/``[T, De]`` and ``[Dt]``/``[T', Dt]`` and ``index``, the
    item's position in this dataset.
    """

    def __init__(
        self,
        event_features: torch.Tensor | np.ndarray,
        target_features: torch.Tensor | np.ndarray,
        metadata: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
        *,
        validate: bool = True,
        source_names: tuple[str, str] = ("event_features", "target_features"),
        _indices: np.ndarray | None = None,
    ):
        ev_name, tg_name = source_names
        self._event = _check_features(event_features, ev_name)
        self._target = _check_features(target_features, tg_name)
        if self._event.shape[0] != self._target.shape[0]:
            raise ValueError(
                f"{ev_name} has {self._event.shape[0]} rows (shape {tuple(self._event.shape)}) but {tg_name} has "
                f"{self._target.shape[0]} (shape {tuple(self._target.shape)}): expected one target row per event row"
            )
        n_total = self._event.shape[0]
        self.metadata, self.samples = self._parse_metadata(metadata, n_total)
        if validate:
            for t, name in ((self._event, ev_name), (self._target, tg_name)):
                bad = _first_non_finite_row(t)
                if bad is not None:
                    raise ValueError(f"{name} contains NaN or inf: first bad row {bad}")
        self._indices = _indices
        self.source_names = source_names

    def _parse_metadata(self, metadata: Any, n: int) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
        if metadata is None:
            return {}, None
        if isinstance(metadata, (list, tuple)):
            metadata = {"samples": list(metadata)}
        if not isinstance(metadata, dict):
            raise InputTypeError(
                f"metadata must be a dict or a list of per-sample dicts, got {type(metadata).__name__}"
            )
        info = {k: v for k, v in metadata.items() if k != "samples"}
        expected = {
            "num_samples": n,
            "event_dim": int(self._event.shape[-1]),
            "target_dim": int(self._target.shape[-1]),
            "event_shape": list(self._event.shape[1:]),
            "target_shape": list(self._target.shape[1:]),
        }
        for key, value in expected.items():
            if key in info and info[key] != value:
                raise ValueError(f"metadata {key}={info[key]} but the features give {value}")
        samples = metadata.get("samples")
        if samples is not None:
            if not isinstance(samples, list) or not all(isinstance(s, dict) for s in samples):
                raise InputTypeError("metadata 'samples' must be a list of per-sample dicts")
            if len(samples) != n:
                raise ValueError(f"metadata 'samples' has {len(samples)} entries: expected {n}, one per row")
        return info, samples

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_directory(
        cls, path: str | os.PathLike, *, validate: bool = True, mmap: bool = True
    ) -> AlignmentDataset:
        """Read a feature directory (format in the module docstring).

        Raises:
            FileNotFoundError: directory or feature file missing.
            ValueError / TypeError / KeyError: unreadable or refused file, mismatched rows, NaN/inf,
                metadata inconsistent with the tensors (messages name the file).
        """
        directory = Path(path)
        if not directory.is_dir():
            raise FileNotFoundError(f"feature directory {directory} does not exist")
        ev_path, tg_path = find_feature_file(directory, EVENT_STEM), find_feature_file(directory, TARGET_STEM)
        metadata = None
        meta_path = directory / METADATA_FILE
        if meta_path.is_file():
            try:
                metadata = json.loads(meta_path.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{meta_path}: invalid JSON ({e})") from e
            if not isinstance(metadata, dict):
                raise ValueError(f"{meta_path}: expected a JSON object at top level")
        try:
            return cls(
                read_features(ev_path, mmap),
                read_features(tg_path, mmap),
                metadata,
                validate=validate,
                source_names=(str(ev_path), str(tg_path)),
            )
        except ValueError as e:
            if "metadata" in str(e) and str(meta_path) not in str(e):
                raise ValueError(f"{meta_path}: {e}") from e
            raise

    def save_to_directory(self, path: str | os.PathLike) -> Path:
        """Write this dataset (or subset) as safetensors + metadata.json, atomically; returns the path."""
        from safetensors.torch import save_file

        path = Path(path)
        samples = self.samples_list()
        meta = dict(self.metadata)
        meta.update(num_samples=len(self), event_dim=self.event_dim, target_dim=self.target_dim,
                    event_shape=list(self.event_shape), target_shape=list(self.target_shape))
        if samples is not None:
            meta["samples"] = samples
        with atomic_directory(path) as tmp:
            save_file({"features": self.event_features.contiguous()}, str(tmp / f"{EVENT_STEM}.safetensors"))
            save_file(
                {"features": self.target_features.contiguous()}, str(tmp / f"{TARGET_STEM}.safetensors")
            )
            atomic_write_json(tmp / METADATA_FILE, meta)
        return path

    # -- access -------------------------------------------------------------------------------

    def _rows(self) -> np.ndarray | slice:
        return slice(None) if self._indices is None else self._indices

    def __len__(self) -> int:
        return self._event.shape[0] if self._indices is None else len(self._indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"AlignmentDataset index must be an int, got {type(i).__name__}")
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for AlignmentDataset of {n} samples")
        i = int(i) % n
        row = i if self._indices is None else int(self._indices[i])
        return {
            "event_features": self._event[row].to(torch.float32),
            "target_features": self._target[row].to(torch.float32),
            "index": i,
        }

    @property
    def event_dim(self) -> int:
        return int(self._event.shape[-1])

    @property
    def target_dim(self) -> int:
        return int(self._target.shape[-1])

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Per-sample event shape: ``(De,)`` or ``(T, De)``."""
        return tuple(self._event.shape[1:])

    @property
    def target_shape(self) -> tuple[int, ...]:
        """Per-sample target shape: ``(Dt,)`` or ``(T', Dt)``."""
        return tuple(self._target.shape[1:])

    @property
    def event_features(self) -> torch.Tensor:
        """All event features of this dataset, ``[len, ...]`` in the stored dtype (a copy for subsets)."""
        return self._event if self._indices is None else self._event[torch.from_numpy(self._indices)]

    @property
    def target_features(self) -> torch.Tensor:
        return self._target if self._indices is None else self._target[torch.from_numpy(self._indices)]

    def samples_list(self) -> list[dict[str, Any]] | None:
        """Per-sample metadata dicts of this dataset (``None`` when there is none)."""
        if self.samples is None:
            return None
        if self._indices is None:
            return list(self.samples)
        return [self.samples[int(j)] for j in self._indices]

    def metadata_column(self, key: str) -> list[Any]:
        """Value of ``key`` for every sample (e.g. ``"sequence"``, usable as retrieval ``positive_groups``)."""
        samples = self.samples_list()
        if samples is None:
            raise InputKeyError(f"this AlignmentDataset has no per-sample metadata, so no {key!r} column")
        missing = [i for i, s in enumerate(samples) if key not in s]
        if missing:
            raise InputKeyError(f"per-sample metadata lacks {key!r} (first at sample {missing[0]})")
        return [s[key] for s in samples]

    def subset(self, indices: Sequence[int] | np.ndarray) -> AlignmentDataset:
        """A view on rows ``indices`` of this dataset (shares storage; no copy)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"subset indices must lie in [0, {n}), got range [{idx.min()}, {idx.max()}]")
        base = idx if self._indices is None else self._indices[idx]
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._indices = base
        return new

    def split(
        self, val_fraction: float = 0.2, *, seed: int = 0, group_by: str | None = None
    ) -> tuple[AlignmentDataset, AlignmentDataset]:
        """Random ``(train, val)`` split.

        With ``group_by`` (a per-sample metadata key such as ``"sequence"``) whole groups go to one
        side, so overlapping windows of one sequence never straddle the split; groups are shuffled and
        added to ``val`` until it holds at least ``val_fraction`` of the samples.
        """
        if not 0.0 < float(val_fraction) < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        n = len(self)
        rng = np.random.default_rng(seed)
        if group_by is None:
            n_val = round(n * val_fraction)
            if not 0 < n_val < n:
                raise ValueError(
                    f"val_fraction={val_fraction} of {n} samples leaves an empty train or val split"
                )
            order = rng.permutation(n)
            val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
        else:
            labels = np.asarray([str(v) for v in self.metadata_column(group_by)])
            groups = np.unique(labels)
            if len(groups) < 2:
                raise ValueError(
                    f"group_by={group_by!r} gives {len(groups)} group(s): need at least 2 to split"
                )
            in_val = np.zeros(n, dtype=bool)
            for g in rng.permutation(groups):
                if in_val.sum() >= n * val_fraction:
                    break
                in_val |= labels == g
            if in_val.all():
                raise ValueError(
                    f"val_fraction={val_fraction} with group_by={group_by!r} leaves no training group"
                )
            val_idx, train_idx = np.flatnonzero(in_val), np.flatnonzero(~in_val)
        return self.subset(train_idx), self.subset(val_idx)

    def __repr__(self) -> str:
        return (
            f"AlignmentDataset(num_samples={len(self)}, event_shape={self.event_shape}, "
            f"target_shape={self.target_shape})"
        )
