"""Value checks shared by the entry points, run before any expensive work (one-line ``ValueError``)."""

from __future__ import annotations

import math

# Far above any event sensor or camera in use (DSEC: 640x480 events, 1440x1080 images), far below what
# would exhaust memory: a 100000x100000 canvas is 10^10 pixels per frame.
MAX_SIDE = 16384
MAX_PIXELS = 8192 * 8192


def check_size(name: str, size) -> tuple[int, int]:
    """``(width, height)`` of a sensor or image: positive integers within :data:`MAX_SIDE` / :data:`MAX_PIXELS`."""
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected WIDTHxHEIGHT, got {size!r}") from None
    if w < 1 or h < 1 or max(w, h) > MAX_SIDE or w * h > MAX_PIXELS:
        raise ValueError(f"{name}={w}x{h}: expected positive sides of at most {MAX_SIDE} and at most "
                         f"{MAX_PIXELS:,} pixels (DSEC: 640x480 events, 1440x1080 images)")
    return w, h


def check_positive_finite(name: str, value: float) -> float:
    """A finite value > 0 (learning rates, temperatures); ``inf``/``nan``/``0`` are refused naming ``name``."""
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r}: expected a finite number > 0")
    return float(value)


def check_device(name: str, device: str | None) -> None:
    """``cuda`` (or ``cuda:N``) only where torch sees that GPU: otherwise one line, before any work."""
    if device is None or not str(device).startswith("cuda"):
        return
    import torch

    index = int(str(device).partition(":")[2] or 0)
    if not torch.cuda.is_available():
        raise ValueError(f"{name}={device}: no CUDA GPU is available to torch here (use cpu)")
    if index >= torch.cuda.device_count():
        raise ValueError(f"{name}={device}: torch sees {torch.cuda.device_count()} GPU(s)")


def check_tower_names(**towers: str | None) -> None:
    """Flag -> tower name: paths must exist (``proxy``/``tiny`` and Hub repo ids pass), before any data work."""
    from ..features.towers import check_tower_reference

    for flag, name in towers.items():
        if name and name not in ("proxy", "tiny"):
            check_tower_reference(name, flag)
