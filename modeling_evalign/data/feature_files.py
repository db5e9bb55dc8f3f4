"""Reading one side of a feature directory: ``<stem>.safetensors`` (memory-mapped) or ``<stem>.pt``.

The directory format is described in :mod:`modeling_evalign.data.alignment_dataset`. A ``.pt`` file
(the brief's legacy ``features/event_features.pt``: a bare tensor from ``torch.save``) is read with
``torch.load(weights_only=True)``: a file that needs a foreign class to unpickle is refused. A
safetensors file whose data is shorter than its header promises (a copy cut short) is reported as
truncated before anything is memory-mapped.
"""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.errors import InputKeyError, InputTypeError

EVENT_STEM = "event_features"
TARGET_STEM = "target_features"
METADATA_FILE = "metadata.json"
SUFFIXES = (".safetensors", ".pt")

# safetensors dtype tag -> numpy dtype (bf16 has no numpy dtype: read through safetensors instead)
_NP_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16}


def find_feature_file(directory: Path, stem: str) -> Path:
    """``directory/<stem>.safetensors`` or, failing that, ``<stem>.pt``; FileNotFoundError naming both."""
    for suffix in SUFFIXES:
        candidate = directory / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    names = " or ".join(f"{stem}{s}" for s in SUFFIXES)
    raise FileNotFoundError(
        f"{directory}: no {names} (see modeling_evalign.data.alignment_dataset for the format)"
    )


def read_safetensors_header(path: Path) -> tuple[int, dict[str, Any]]:
    """``(header_len, header)`` of a safetensors file, after checking the file holds all promised bytes."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if 8 + header_len > size:
                raise ValueError(
                    f"{path} is truncated: its header promises a {header_len:,}-byte header, "
                    f"file has {size:,} bytes in all"
                )
            header = json.loads(f.read(header_len))
    except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from e
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a readable safetensors file (header is not a JSON object)")
    ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    promised, present = max(ends, default=0), size - 8 - header_len
    if present < promised:
        raise ValueError(
            f"{path} is truncated: header promises {promised:,} bytes of data, file has {present:,}"
        )
    return header_len, header


def _read_safetensors(path: Path, mmap: bool) -> torch.Tensor:
    """The single tensor of a safetensors file (key "features" preferred), memory-mapped when possible."""
    header_len, header = read_safetensors_header(path)
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    if "features" in tensors:
        key = "features"
    elif len(tensors) == 1:
        key = next(iter(tensors))
    else:
        raise InputKeyError(
            f"{path}: expected one tensor or a tensor named 'features', found keys {sorted(tensors)}"
        )
    info = tensors[key]
    np_dtype = _NP_DTYPES.get(info["dtype"])
    if mmap and np_dtype is not None and int(np.prod(info["shape"])) > 0:
        begin, _ = info["data_offsets"]
        array = np.memmap(
            path,
            dtype=np.dtype(np_dtype).newbyteorder("<"),
            mode="c",
            offset=8 + header_len + begin,
            shape=tuple(info["shape"]),
        )
        return torch.from_numpy(array)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.get_tensor(key)


def _read_pt(path: Path, mmap: bool) -> torch.Tensor:
    def load(use_mmap: bool) -> Any:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)

    try:
        try:
            obj = load(mmap)
        except RuntimeError as e:  # legacy (non-zip) files cannot be memory-mapped
            if not mmap or "mmap" not in str(e):
                raise
            obj = load(False)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{path}: refused to load: it needs classes outside tensors and plain containers to unpickle "
            f"(read with torch.load(weights_only=True)); re-save it as a tensor or {{'features': tensor}}. {e}"
        ) from e
    except (RuntimeError, EOFError) as e:  # a cut-short or otherwise damaged torch file
        raise ValueError(f"{path}: not a readable torch file (truncated or corrupt: {e})") from e
    if isinstance(obj, dict):
        if "features" in obj:
            obj = obj["features"]
        elif len(obj) == 1:
            obj = next(iter(obj.values()))
        else:
            raise InputKeyError(
                f"{path}: expected a tensor or a dict with key 'features', found keys {sorted(map(str, obj))}"
            )
    if not isinstance(obj, torch.Tensor):
        raise InputTypeError(
            f"{path}: expected a tensor or a dict with a 'features' tensor, found {type(obj).__name__}"
        )
    return obj


def read_features(path: Path, mmap: bool = True) -> torch.Tensor:
    """The feature tensor of one file (``.safetensors`` memory-mapped when ``mmap``, or ``.pt``)."""
    if path.suffix == ".safetensors":
        return _read_safetensors(path, mmap)
    return _read_pt(path, mmap)
