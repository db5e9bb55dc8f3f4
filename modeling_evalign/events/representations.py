"""Dense event representations with exact, documented semantics (numpy in -> numpy out, torch in ->
torch out on the same device).

numpy arrays and CPU tensors go through the fused numba kernels of :mod:`.kernels` (one pass that
validates and accumulates, threaded), imported on first use; the vectorised numpy implementations
below (bincount on linear indices) serve where numba is missing and as the kernels' reference, and the
torch kernels (index_add_) serve other devices.

Input for every function: ``x, y`` integer pixel coordinates (0 <= x < width, 0 <= y < height),
``t`` timestamps in µs (non-decreasing), ``p`` polarity in {0, 1}; bad input raises ValueError/TypeError
naming the field and the offending value (see :mod:`.validation`). An empty stream gives the
documented empty output. This module imports numpy and torch only (numba lazily, optionally): it is
bundled into checkpoints.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .validation import check_events, check_sensor_size

__all__ = ["count_frames", "event_histogram_image", "eventgpt_frames", "voxel_grid"]

# EventGPT colours: p=1 red, p=0 blue, on a white canvas
_EVENTGPT_COLORS = np.array([[0, 0, 255], [255, 0, 0]], dtype=np.uint8)
_STD_FLOOR = 1e-6
# CPU tensors go through the numpy kernels (zero-copy): torch's CPU index_add_/bincount are several
# times slower than np.bincount. The torch kernels serve other devices (tests switch this off).
CPU_TENSORS_VIA_NUMPY = True
# numpy input goes through the fused numba kernels; tests switch this off to run the numpy paths.
USE_NUMBA_KERNELS = True


def _fused(name: str):
    """The fused kernel ``name`` of :mod:`.kernels`, or None (switched off, or numba not installed)."""
    if not USE_NUMBA_KERNELS:
        return None
    from .kernels import AVAILABLE, count_frames, eventgpt_frames, normalize_nonzero, voxel_grid

    if not AVAILABLE:
        return None
    return {
        "voxel_grid": voxel_grid,
        "count_frames": count_frames,
        "eventgpt_frames": eventgpt_frames,
        "normalize_nonzero": normalize_nonzero,
    }[name]


def _via_numpy(fn, x, y, t, p, *args, **kwargs):
    out = fn(*(a.numpy() for a in (x, y, t, p)), *args, **kwargs)
    return torch.from_numpy(out)


def _cpu_tensors(x) -> bool:
    return CPU_TENSORS_VIA_NUMPY and isinstance(x, torch.Tensor) and x.device.type == "cpu"


def _check(x, y, t, p, height, width, values: bool = True) -> tuple[bool, int, int]:
    height, width = check_sensor_size(height, width)
    return check_events(x, y, t, p, height, width, values=values), height, width


def _try_fused(name: str, use_torch: bool, x, y, t, p, height: int, width: int, *args):
    """The fused kernel's output, or None: then the stream is validated in full (raising the named
    error for what the kernel rejected) and the caller runs its numpy/torch path."""
    kernel = None if use_torch or not x.shape[0] else _fused(name)
    out = kernel(x, y, t, p, height, width, *args) if kernel is not None else None
    if out is None:
        check_events(x, y, t, p, height, width)
    return out


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def voxel_grid(x, y, t, p, num_bins: int, height: int, width: int, normalize: bool = False):
    """E2VID voxel grid: float32 ``[num_bins, height, width]``.

    Timestamps are mapped to ``tn = (num_bins - 1) * (t - t[0]) / (t[-1] - t[0])`` (a zero span counts
    as 1 µs, so a window whose events share one timestamp lands in bin 0). Each event adds its
    polarity (p=0 -> -1, p=1 -> +1) to bins ``floor(tn)`` and ``floor(tn) + 1`` with weights
    ``1 - frac(tn)`` and ``frac(tn)`` (bilinear in time only; x, y are exact). With ``normalize`` the
    non-zero voxels are shifted/scaled to mean 0 and population std 1 (std floored at 1e-6) and zero
    voxels stay 0, as in E2VID/EVREAL. An empty stream gives zeros. Sums are float64 (integer
    timestamps on CPU: exact integer sums, one division), then cast to float32; torch kernels on other
    devices sum in float32.
    """
    use_torch, height, width = _check(x, y, t, p, height, width, values=False)
    num_bins = _check_count("num_bins", num_bins)
    if _cpu_tensors(x):
        return _via_numpy(voxel_grid, x, y, t, p, num_bins, height, width, normalize)
    grid = _try_fused("voxel_grid", use_torch, x, y, t, p, height, width, num_bins)
    if grid is not None:
        if normalize:
            _fused("normalize_nonzero")(grid.reshape(-1), _STD_FLOOR)
        return grid
    hw = height * width
    size = num_bins * hw
    n = int(x.shape[0])
    if use_torch:
        dev = x.device
        out = torch.zeros(size + hw, dtype=torch.float32, device=dev)
        if n:
            fdt = torch.float32 if dev.type == "mps" else torch.float64
            t64 = t.to(torch.int64) if not t.dtype.is_floating_point else t.to(fdt)
            span = (t64[-1] - t64[0]).to(fdt)
            span = torch.where(span == 0, torch.ones_like(span), span)
            tn = (t64 - t64[0]).to(fdt) * ((num_bins - 1) / span)
            tn = tn.clamp_(0, num_bins - 1)
            left = tn.floor()
            frac = tn - left
            pol = p.to(fdt) * 2 - 1
            w_right = pol * frac
            w_left = pol - w_right
            idx = y.to(torch.int64) * width + x.to(torch.int64) + left.to(torch.int64) * hw
            out.index_add_(0, idx, w_left.to(torch.float32))
            out.index_add_(0, idx + hw, w_right.to(torch.float32))  # bin num_bins lands in the spare slot
        grid = out[:size].view(num_bins, height, width)
        return _normalize_torch(grid) if normalize else grid
    grid = np.zeros((num_bins, hw), dtype=np.float64)
    if n:
        t0, t1 = t[0], t[-1]
        span = float(t1) - float(t0) if t.dtype.kind == "f" else int(t1) - int(t0)
        span = span or 1
        tn = np.subtract(t, t0, dtype=np.float64)
        tn *= (num_bins - 1) / span  # in [0, num_bins - 1] up to one ulp: t is sorted
        idx = _pixel_polarity_index(x, y, p, width)
        # t is sorted, so the events with floor(tn) == k form one contiguous block. Per block and per
        # (pixel, polarity): the event count c and the sum of frac(tn) f give the bilinear weights
        # without per-event weight arrays: bin k gets sum(pol * (1 - frac)) = (c+ - c-) - (f+ - f-),
        # bin k + 1 gets f+ - f-.
        edges = np.searchsorted(tn, np.arange(num_bins + 1), side="left")
        edges[-1] = n
        for k in range(num_bins):
            lo, hi = int(edges[k]), int(edges[k + 1])
            if lo == hi:
                continue
            frac = tn[lo:hi]
            frac -= k
            counts = np.bincount(idx[lo:hi], minlength=2 * hw).reshape(hw, 2)
            fsum = np.bincount(idx[lo:hi], weights=frac, minlength=2 * hw).reshape(hw, 2)
            right = fsum[:, 1] - fsum[:, 0]
            grid[k] += (counts[:, 1] - counts[:, 0]) - right
            if k + 1 < num_bins:
                grid[k + 1] += right
    grid = grid.astype(np.float32).reshape(num_bins, height, width)
    return _normalize_numpy(grid) if normalize else grid


def _pixel_polarity_index(x: np.ndarray, y: np.ndarray, p: np.ndarray, width: int) -> np.ndarray:
    """``(y * width + x) * 2 + p`` as intp: bins interleave (pixel, polarity), so a bincount reshaped to
    ``[H * W, 2]`` holds per-polarity counts (fewer passes over the events than a separate channel)."""
    idx = np.multiply(y, 2 * width, dtype=np.intp)
    if x.dtype == np.uint16 and p.dtype in (np.uint8, np.bool_) and width < 1 << 15:
        xp = np.left_shift(x, 1)  # DSEC's dtypes: 2x + p fits uint16, one wide pass fewer
        xp |= p
        idx += xp
    else:
        idx += x
        idx += x
        idx += p
    return idx


def _normalize_numpy(grid: np.ndarray) -> np.ndarray:
    mask = grid != 0
    if mask.any():
        vals = grid[mask].astype(np.float64)
        mean = vals.mean()
        std = max(vals.std(), _STD_FLOOR)
        grid[mask] = ((vals - mean) / std).astype(np.float32)
    return grid


def _normalize_torch(grid: torch.Tensor) -> torch.Tensor:
    mask = grid != 0
    if bool(mask.any()):
        vals = grid[mask]
        mean = vals.mean()
        std = vals.std(correction=0).clamp_min(_STD_FLOOR)
        grid = grid.masked_scatter(mask, (vals - mean) / std)
    return grid


def _frame_of_event(n: int, num_frames: int, like: Any):
    """Frame index per event for an equal-count split, remainder in the last frame."""
    per = n // num_frames
    if use_t := isinstance(like, torch.Tensor):
        ar = torch.arange(n, device=like.device)
    else:
        ar = np.arange(n)
    if per == 0:
        return (ar * 0 + (num_frames - 1)) if use_t else np.full(n, num_frames - 1)
    f = ar // per
    return f.clamp_(max=num_frames - 1) if use_t else np.minimum(f, num_frames - 1)


def eventgpt_frames(x, y, t, p, height: int, width: int, num_frames: int = 5):
    """EventGPT frames: uint8 ``[num_frames, height, width, 3]`` RGB.

    Events are split into ``num_frames`` chunks of ``len // num_frames`` consecutive events (the
    remainder goes to the last chunk; with fewer events than frames everything lands in the last
    frame). Each frame starts white; each event overwrites its pixel (the last event at a pixel wins,
    no accumulation) with red (255, 0, 0) for p=1 or blue (0, 0, 255) for p=0. EventGPT sizes the canvas
    per chunk from the largest coordinate; here it is the sensor size (640x480 for DSEC).
    """
    use_torch, height, width = _check(x, y, t, p, height, width, values=False)
    num_frames = _check_count("num_frames", num_frames)
    if _cpu_tensors(x):
        return _via_numpy(eventgpt_frames, x, y, t, p, height, width, num_frames)
    frames = _try_fused("eventgpt_frames", use_torch, x, y, t, p, height, width, num_frames)
    if frames is not None:
        return frames
    hw = height * width
    n = int(x.shape[0])
    if use_torch:
        dev = x.device
        canvas = torch.full((num_frames * hw, 3), 255, dtype=torch.uint8, device=dev)
        if n:
            frame = _frame_of_event(n, num_frames, x)
            idx = frame * hw + y.to(torch.int64) * width + x.to(torch.int64)
            last = torch.full((num_frames * hw,), -1, dtype=torch.int64, device=dev)
            last.scatter_reduce_(0, idx, torch.arange(n, device=dev), reduce="amax")
            hit = torch.nonzero(last >= 0).squeeze(1)
            colors = torch.as_tensor(_EVENTGPT_COLORS, device=dev)
            canvas[hit] = colors[p[last[hit]].to(torch.int64)]
        return canvas.view(num_frames, height, width, 3)
    canvas = np.full((num_frames * hw, 3), 255, dtype=np.uint8)
    if n:
        frame = _frame_of_event(n, num_frames, x)
        idx = frame * hw + y.astype(np.int64) * width + x
        # deterministic "last event wins": the largest event index per pixel (torch scatter amax, zero-copy)
        last = torch.full((num_frames * hw,), -1, dtype=torch.int64)
        last.scatter_reduce_(0, torch.from_numpy(idx), torch.arange(n), reduce="amax")
        last = last.numpy()
        hit = np.flatnonzero(last >= 0)
        canvas[hit] = _EVENTGPT_COLORS[p[last[hit]].astype(np.int64)]
    return canvas.reshape(num_frames, height, width, 3)


def _frame_by_time(t, num_frames: int, use_torch: bool):
    """Frame index per event for ``num_frames`` equal time slices of [t[0], t[-1]] (last slice closed)."""
    if use_torch:
        t64 = t.to(torch.float64)
        span = float(t64[-1] - t64[0]) or 1.0
        f = ((t64 - t64[0]) * (num_frames / span)).floor().to(torch.int64)
        return f.clamp_(0, num_frames - 1)
    span = float(t[-1]) - float(t[0]) or 1.0
    f = np.floor(np.subtract(t, t[0], dtype=np.float64) * (num_frames / span)).astype(np.int64)
    return np.clip(f, 0, num_frames - 1)


def count_frames(x, y, t, p, height: int, width: int, num_frames: int = 1, split: str = "time"):
    """Per-polarity event counts: float32 ``[num_frames, 2, height, width]``; channel 0 counts p=0
    (negative) events, channel 1 counts p=1 (positive) events.

    ``split="time"``: frame ``k`` holds events with ``k <= num_frames * (t - t[0]) / (t[-1] - t[0]) < k + 1``
    (the last event goes to the last frame; a zero span puts everything in frame 0).
    ``split="count"``: equal event counts, remainder in the last frame (as :func:`eventgpt_frames`).
    An empty stream gives zeros. Counts are exact up to 2^24 per bin (float32's integer range).
    """
    use_torch, height, width = _check(x, y, t, p, height, width, values=False)
    num_frames = _check_count("num_frames", num_frames)
    if split not in ("time", "count"):
        raise ValueError(f"split must be 'time' or 'count', got {split!r}")
    if _cpu_tensors(x):
        return _via_numpy(count_frames, x, y, t, p, height, width, num_frames, split)
    out = _try_fused("count_frames", use_torch, x, y, t, p, height, width, num_frames, split == "time")
    if out is not None:
        return out
    hw = height * width
    size = num_frames * 2 * hw
    n = int(x.shape[0])
    if use_torch:
        out = torch.zeros(size, dtype=torch.float32, device=x.device)
        if n:
            frame = (
                _frame_by_time(t, num_frames, True) if split == "time" else _frame_of_event(n, num_frames, x)
            )
            idx = (frame * 2 + p.to(torch.int64)) * hw + y.to(torch.int64) * width + x.to(torch.int64)
            out = torch.bincount(idx, minlength=size).to(torch.float32)
        return out.view(num_frames, 2, height, width)
    out = np.zeros((num_frames, 2 * hw), dtype=np.float32)
    if n:
        # frames are contiguous blocks of the sorted stream: one bincount per frame over 2*H*W bins
        if split == "time":
            span = float(t[-1]) - float(t[0]) or 1.0
            scaled = np.subtract(t, t[0], dtype=np.float64)
            scaled *= num_frames / span
            edges = np.searchsorted(scaled, np.arange(num_frames + 1), side="left")
        else:
            per = n // num_frames
            edges = np.minimum(np.arange(num_frames + 1) * per, n) if per else np.full(num_frames + 1, 0)
        edges[0], edges[-1] = 0, n
        idx = _pixel_polarity_index(x, y, p, width)
        for k in range(num_frames):
            lo, hi = int(edges[k]), int(edges[k + 1])
            if lo < hi:
                out[k] = np.bincount(idx[lo:hi], minlength=2 * hw).reshape(hw, 2).T.reshape(-1)
    return out.reshape(num_frames, 2, height, width)


def event_histogram_image(x, y, t, p, height: int, width: int, hot_pixel_std: float = 10.0):
    """CEIA event histogram image: float32 ``[height, width, 3]`` RGB in [0, 1] on a BLACK background.

    Counts positive (p=1) and negative (p=0) events per pixel, giving ``2 * H * W`` (pixel, polarity)
    bins. Hot bins, count > mean + ``hot_pixel_std`` * std of all non-zero bins of both polarities
    (population std), are set to 0. Both channels are then divided by their common maximum, so relative
    polarity strength is kept: red = positive, blue = negative, green = 0. An empty stream gives zeros.
    Multiply by 255 and cast to uint8 for a PIL image before the CLIP transform.
    """
    counts = count_frames(x, y, t, p, height, width, num_frames=1)[0]  # [2, H, W], channel = p
    if isinstance(counts, torch.Tensor):
        nz = counts[counts > 0]
        if nz.numel():
            counts = torch.where(counts > nz.mean() + hot_pixel_std * nz.std(correction=0), 0.0, counts)
        peak = counts.max()
        if float(peak) > 0:
            counts = counts / peak
        img = torch.zeros((height, width, 3), dtype=torch.float32, device=counts.device)
        img[..., 0] = counts[1]
        img[..., 2] = counts[0]
        return img
    counts = counts.astype(np.float64)
    nz = counts[counts > 0]
    if nz.size:
        counts[counts > nz.mean() + hot_pixel_std * nz.std()] = 0
    peak = counts.max()
    if peak > 0:
        counts /= peak
    img = np.zeros((height, width, 3), dtype=np.float32)
    img[..., 0] = counts[1]
    img[..., 2] = counts[0]
    return img
