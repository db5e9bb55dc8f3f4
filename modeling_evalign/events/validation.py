"""Checks shared by every event representation: one backend (numpy or torch), matching lengths,
coordinates inside the sensor, non-decreasing timestamps and polarities in {0, 1}.

Errors name the field and the first offending value, so a bad stream is easy to locate.
Kept importable with numpy + torch only (bundled into checkpoints for ``trust_remote_code``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["check_events", "check_sensor_size", "is_torch"]


def is_torch(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def check_sensor_size(height: Any, width: Any) -> tuple[int, int]:
    """Return ``(height, width)`` as ints; raise ValueError/TypeError unless both are positive integers."""
    out = []
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be a positive int, got {type(value).__name__} {value!r}")
        if value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value}")
        out.append(int(value))
    return out[0], out[1]


def _first_bad(mask: Any) -> int:
    if is_torch(mask):
        return int(torch.nonzero(mask)[0, 0])
    return int(np.flatnonzero(mask)[0])


_TORCH_WIDE_UNSIGNED = tuple(getattr(torch, n) for n in ("uint16", "uint32", "uint64") if hasattr(torch, n))


def check_events(x: Any, y: Any, t: Any, p: Any, height: int, width: int, values: bool = True) -> bool:
    """Validate one event stream; return True for torch tensors, False for numpy arrays.

    x, y: integer pixel coordinates, 0 <= x < width, 0 <= y < height; t: integer or float µs,
    non-decreasing; p: polarity in {0, 1} (integer or bool). All four 1-D with the same length.
    ``values=False`` checks only types, shapes and dtypes (for kernels that check values as they go).
    """
    arrays = {"x": x, "y": y, "t": t, "p": p}
    torch_flags = {name: is_torch(a) for name, a in arrays.items()}
    if any(torch_flags.values()) and not all(torch_flags.values()):
        kinds = {n: ("torch.Tensor" if f else type(arrays[n]).__name__) for n, f in torch_flags.items()}
        raise TypeError(f"x, y, t, p must all be numpy arrays or all torch tensors, got {kinds}")
    use_torch = all(torch_flags.values())
    if not use_torch:
        for name, a in arrays.items():
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(a).__name__}")
    else:
        devices = {str(a.device) for a in arrays.values()}
        if len(devices) > 1:
            raise ValueError(f"x, y, t, p must be on one device, got {sorted(devices)}")
    n = None
    for name, a in arrays.items():
        if a.ndim != 1:
            raise ValueError(f"{name} must be 1-D (one entry per event), got shape {tuple(a.shape)}")
        if n is None:
            n = a.shape[0]
        elif a.shape[0] != n:
            raise ValueError(
                f"x, y, t, p must have one length, got {[int(v.shape[0]) for v in arrays.values()]}"
            )
        is_int = (
            (not a.dtype.is_floating_point and not a.dtype.is_complex) if use_torch else a.dtype.kind in "uib"
        )
        if name != "t" and not is_int:
            raise TypeError(f"{name} must hold integers, got dtype {a.dtype}")
    if n == 0 or not values:
        return use_torch
    for name, a, limit, dim in (("x", x, width, "width"), ("y", y, height, "height")):
        if use_torch and a.dtype in _TORCH_WIDE_UNSIGNED:  # DSEC's uint16: torch has no min/max for it
            a = a.to(torch.int64)
        lo, hi = (int(a.min()), int(a.max()))
        if lo < 0 or hi >= limit:
            bad = _first_bad((a < 0) | (a >= limit))
            raise ValueError(
                f"{name}[{bad}] = {int(a[bad])} is outside the sensor: expected 0 <= {name} < {dim} = {limit}"
            )
    if n > 1:
        dec = t[1:] < t[:-1]
        if bool(dec.any()):
            i = _first_bad(dec)
            raise ValueError(
                f"t must be non-decreasing (sorted by time): t[{i + 1}] = {t[i + 1].item()} < t[{i}] = {t[i].item()}"
            )
    if p.dtype != (torch.bool if use_torch else np.bool_) and (int(p.min()) < 0 or int(p.max()) > 1):
        bad_p = (p != 0) & (p != 1)
        if bool(bad_p.any()):
            i = _first_bad(bad_p)
            raise ValueError(f"p (polarity) must be 0 or 1, got p[{i}] = {p[i].item()}")
    return use_torch
