"""Fused numba kernels for the dense event representations: one pass validates, indexes and accumulates.

Imported lazily by :mod:`.representations` (``import modeling_evalign`` never loads numba). Kernels are
``njit(cache=True, nogil=True)``: compiled once per input-dtype combination and cached on disk, and they
release the GIL, so the sorted stream is split into contiguous event ranges, one plain Python thread
each, started per call (fork-safe and reentrant, unlike a persistent pool; ``torch.get_num_threads()``
threads, which is 1 inside DataLoader workers). Ranges meet inside a time bin/frame: what two ranges
share goes to private scratch buffers that are added afterwards, so each output element has one
writer, and counts and integer voxel sums do not depend on the thread count. Time bins and frames are contiguous blocks of the sorted stream; their edges
come from a binary search with the numpy path's arithmetic, so block membership is identical to it.

Accumulators are sized for the cache (a random 10M-event stream is bound by cache misses, not
arithmetic): counts per frame go to uint8 per (polarity, pixel) (0.6 MB at 640x480, fits L2), 256 at a
time moved out, so counts stay exact. The voxel grid with integer timestamps is computed exactly: an
event of bin k has ``tn = k + r / span`` with integer ``r``, so per bin the net polarity count (uint8 per
polarity) and ``sum(pol * r)`` (int32, moved out before it can overflow) give ``span * value`` as an
integer, divided once when the bin is complete (bit for bit the numpy path's float64 sums rounded to
float32, in the tests and the benchmark); float timestamps and spans from 2^31 µs take the numpy path.

Every kernel returns the index of the first event it rejects (coordinate outside the sensor, decreasing
or NaN t, polarity not 0/1) or -1, and checks before it writes, so it never writes out of bounds; the
caller then runs the ordinary validation, which raises the named error. Without numba (a checkpoint's
bundled code loaded where numba is absent) ``AVAILABLE`` is False and the numpy paths are used.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

try:  # numba is a dependency of the package; bundled remote code may run without it
    import numba

    _njit = numba.njit(cache=True, nogil=True)
    AVAILABLE = True
except ImportError:  # pragma: no cover - only where numba is missing
    AVAILABLE = False

    def _njit(fn):
        return fn


__all__ = ["AVAILABLE", "count_frames", "eventgpt_frames", "normalize_nonzero", "voxel_grid"]

# Below this many events per thread, starting a thread costs more than it saves.
MIN_EVENTS_PER_THREAD = 250_000
_RED, _BLUE = (255, 0, 0), (0, 0, 255)


def num_threads(n: int) -> int:
    """``torch.get_num_threads()`` (1 in DataLoader workers), fewer for short streams."""
    return max(1, min(torch.get_num_threads(), n // MIN_EVENTS_PER_THREAD))


@_njit
def _bad(xi, yi, pi, ti, prev, width, height):
    """The stream contract for one event (``ti != ti``: NaN, which ``ti < prev`` lets through)."""
    return xi < 0 or xi >= width or yi < 0 or yi >= height or ti < prev or ti != ti or (pi != 0 and pi != 1)


@_njit
def _time_edges(t, t0, scale, steps):
    """``edges[k]`` = first i with ``(float(t[i]) - t0) * scale >= k`` (np.searchsorted side='left' on
    the numpy path's scaled times), ``edges[0] = 0``, ``edges[steps] = n``; monotone even for unsorted t."""
    n = t.shape[0]
    edges = np.empty(steps + 1, dtype=np.int64)
    edges[0] = 0
    edges[steps] = n
    lo = 0
    for k in range(1, steps):
        hi = n
        while lo < hi:
            mid = (lo + hi) // 2
            if (np.float64(t[mid]) - t0) * scale < k:
                lo = mid + 1
            else:
                hi = mid
        edges[k] = lo
    return edges


@_njit
def _voxel_range_int(x, y, t, p, lo, hi, edges, t0, span, width, height, out, slots, scratch, spill):
    """Integer timestamps, exact: with ``d = t - t[0]`` an event of bin ``k`` has ``tn = k + r / span``,
    ``r = d * (bins - 1) - k * span`` in ``[0, span]``, so ``span *`` a voxel is a sum of integers: bin k
    gets ``L_k = span * C_k - R_k`` from its own events (C: net polarity count, R: ``sum(pol * r)``) and
    ``R_{k-1}`` from the bin before. Per bin, C (uint8 per polarity) and R (int32) stay in cache; a
    counter about to overflow moves to ``spill`` (int64 ``[2, H*W]``, zeros). At the end of bin k,
    ``L_k + R_{k-1}`` (``R_{k-1}`` carried from the previous bin of this range) is divided once into
    ``out[k]`` (float32) when only this range touches bin k, else stored in ``scratch[slots[k]]``
    (int64 rows, added up by the caller)."""
    hw = width * height
    nbins = edges.shape[0] - 1
    counts = np.zeros(2 * hw, dtype=np.uint8)
    rsum = np.zeros(hw, dtype=np.int32)
    carry = np.zeros(hw, dtype=np.int64)
    lim = np.int64(2**31 - 1)
    prev = t[lo - 1] if lo > 0 else t[lo]
    k_first = 0
    while edges[k_first + 1] <= lo:
        k_first += 1
    k_last = k_first
    while edges[k_last + 1] < hi:
        k_last += 1
    for k in range(k_first, k_last + 1):
        spilled = False
        kspan = np.int64(k) * span
        for i in range(max(lo, edges[k]), min(hi, edges[k + 1])):
            xi = np.int64(x[i])
            yi = np.int64(y[i])
            pi = np.int64(p[i])
            ti = t[i]
            if _bad(xi, yi, pi, ti, prev, width, height):
                return i
            prev = ti
            j = yi * width + xi
            pol = 2 * pi - 1
            v = np.int64(rsum[j]) + pol * ((np.int64(ti) - t0) * (nbins - 1) - kspan)
            if v > lim or v < -lim:
                spill[hw + j] += v
                v = 0
                spilled = True
            rsum[j] = v
            c = counts[2 * j + pi]
            if c == 255:
                spill[j] += pol * 256
                c = -1
                spilled = True
            counts[2 * j + pi] = c + 1
        slot = slots[k]
        for j in range(hw):
            c = np.int64(counts[2 * j + 1]) - np.int64(counts[2 * j])
            rr = np.int64(rsum[j])
            if spilled:
                c += spill[j]
                rr += spill[hw + j]
                spill[j] = 0
                spill[hw + j] = 0
            num = c * span - rr + carry[j]
            carry[j] = rr
            counts[2 * j] = 0
            counts[2 * j + 1] = 0
            rsum[j] = 0
            if slot < 0:
                out[k * hw + j] = np.float32(np.float64(num) / span)
            else:
                scratch[slot * hw + j] = num
    k = k_last + 1
    if k < nbins:  # the carry of the last bin (bin nbins itself is dropped)
        slot = slots[k]
        for j in range(hw):
            if slot < 0:
                out[k * hw + j] = np.float32(np.float64(carry[j]) / span)
            else:
                scratch[slot * hw + j] = carry[j]
    return -1


@_njit
def normalize_nonzero(grid, std_floor):
    """In place: non-zero entries to mean 0 / population std 1 (std floored), zeros stay 0 -- the numpy
    path's formula, with sequential float64 sums (numpy sums pairwise: results agree within 1 ulp)."""
    n = 0
    total = 0.0
    for v in grid:
        if v != 0:
            n += 1
            total += v
    if n == 0:
        return
    mean = total / n
    sq = 0.0
    for v in grid:
        if v != 0:
            d = np.float64(v) - mean
            sq += d * d
    std = max(np.sqrt(sq / n), std_floor)
    for j in range(grid.shape[0]):
        if grid[j] != 0:
            grid[j] = np.float32((np.float64(grid[j]) - mean) / std)


def _in_threads(work, threads: int) -> None:
    """``work(j)`` for j < threads, j = 0 in this thread (plain threads started per call: fork-safe)."""
    pool = [threading.Thread(target=work, args=(j,)) for j in range(1, threads)]
    for th in pool:
        th.start()
    work(0)
    for th in pool:
        th.join()


def _voxel_int(x, y, t, p, height, width, edges, span):
    """Drive :func:`_voxel_range_int`: bin b is touched by range j when its blocks ``k_first..k_last``
    (plus the carry into ``k_last + 1``) include b; a bin touched by one range is written by it
    directly, the others are summed here from the ranges' int64 rows."""
    n, hw, nbins = x.shape[0], height * width, edges.shape[0] - 1
    threads = max(1, min(num_threads(n), n))
    bounds = [n * j // threads for j in range(threads + 1)]
    block = lambda i: int(np.searchsorted(edges, i, side="right")) - 1  # noqa: E731
    spans = [(block(bounds[j]), min(block(bounds[j + 1] - 1) + 1, nbins - 1)) for j in range(threads)]
    touched = np.zeros(nbins, dtype=np.int64)
    for a, b in spans:
        touched[a : b + 1] += 1
    slots, rows = [], []
    for a, b in spans:
        sl = np.full(nbins, -1, dtype=np.int64)
        shared = [k for k in range(a, b + 1) if touched[k] > 1]
        sl[shared] = np.arange(len(shared))
        slots.append(sl)
        rows.append(shared)
    scratch = [np.empty(max(len(r), 1) * hw, dtype=np.int64) for r in rows]
    out = np.zeros(nbins * hw, dtype=np.float32)
    results = [-1] * threads

    def work(j):
        spill = np.zeros(2 * hw, dtype=np.int64)
        results[j] = _voxel_range_int(
            x, y, t, p, bounds[j], bounds[j + 1], edges, int(t[0]), span, width, height, out, slots[j],
            scratch[j], spill,
        )

    _in_threads(work, threads)
    if any(r >= 0 for r in results):
        return None
    sums = {}
    for shared, rows_j in zip(rows, scratch):
        for i, k in enumerate(shared):
            part = rows_j[i * hw : (i + 1) * hw]
            sums[k] = sums[k] + part if k in sums else part.copy()
    for k, num in sums.items():
        out[k * hw : (k + 1) * hw] = (num / span).astype(np.float32)
    return out.reshape(nbins, height, width)


@_njit
def _count_range(x, y, t, p, lo, hi, edges, width, height, out, scratch, shared):
    """Events ``lo:hi`` into ``out`` (float32 ``[frames, 2, H*W]`` flat, zeros); frame ``shared`` into
    ``scratch``. Counts per frame stay in uint8 (cache-resident); one about to overflow moves 256 to the
    output at once (exact in float32 below 2^24 per bin)."""
    hw2 = width * height * 2
    hw = width * height
    counts = np.zeros(hw2, dtype=np.uint8)
    prev = t[lo - 1] if lo > 0 else t[lo]
    for k in range(edges.shape[0] - 1):
        a = max(lo, edges[k])
        b = min(hi, edges[k + 1])
        if a >= b:
            continue
        dst = scratch if k == shared else out
        base = 0 if k == shared else k * hw2
        for i in range(a, b):
            xi = np.int64(x[i])
            yi = np.int64(y[i])
            pi = np.int64(p[i])
            ti = t[i]
            if _bad(xi, yi, pi, ti, prev, width, height):
                return i
            prev = ti
            j = pi * hw + yi * width + xi
            c = counts[j]
            if c == 255:
                dst[base + j] += 256
                c = -1
            counts[j] = c + 1
        for j in range(hw2):
            dst[base + j] += counts[j]
            counts[j] = 0
    return -1


@_njit
def _eventgpt_range(x, y, t, p, lo, hi, edges, width, height, codes, scratch, shared):
    """Last event wins: code 1 (p=0) or 2 (p=1) per (frame, pixel) into ``codes`` (uint8 ``[frames,
    H*W]`` flat), frame ``shared`` into ``scratch``; events are visited in order, so no reduction."""
    hw = width * height
    prev = t[lo - 1] if lo > 0 else t[lo]
    for k in range(edges.shape[0] - 1):
        a = max(lo, edges[k])
        b = min(hi, edges[k + 1])
        dst = scratch if k == shared else codes
        base = 0 if k == shared else k * hw
        for i in range(a, b):
            xi = np.int64(x[i])
            yi = np.int64(y[i])
            pi = np.int64(p[i])
            ti = t[i]
            if _bad(xi, yi, pi, ti, prev, width, height):
                return i
            prev = ti
            dst[base + yi * width + xi] = pi + 1
    return -1


@_njit
def _codes_to_rgb(codes, canvas):
    for j in range(codes.shape[0]):
        c = codes[j]
        if c == 1:
            canvas[j, 0], canvas[j, 1], canvas[j, 2] = _BLUE
        elif c == 2:
            canvas[j, 0], canvas[j, 1], canvas[j, 2] = _RED


def _run(kernel, n: int, edges: np.ndarray, out: np.ndarray, scratch_size: int, *args) -> list | None:
    """Run ``kernel`` over contiguous event ranges in threads. Return ``[(block, scratch), ...]`` for the
    ranges that started inside a block (to be added to ``out``), or None when an event was rejected."""
    threads = max(1, min(num_threads(n), n))  # n >= 1: every range holds at least one event
    bounds = [n * j // threads for j in range(threads + 1)]
    shared = [-1] + [int(np.searchsorted(edges, lo, side="right")) - 1 for lo in bounds[1:-1]]
    scratch = [out[:0]] + [np.zeros(scratch_size, dtype=out.dtype) for _ in shared[1:]]
    results = [-1] * threads

    def work(j):
        results[j] = kernel(*args[:4], bounds[j], bounds[j + 1], edges, *args[4:], out, scratch[j], shared[j])

    _in_threads(work, threads)
    if any(r >= 0 for r in results):
        return None
    return list(zip(shared[1:], scratch[1:]))


def _time_frame(t, steps: int, int_span: bool) -> tuple[float, float]:
    """``(t0, steps / span)`` as the numpy paths compute them (zero span -> 1; voxel_grid takes integer
    spans exactly, count_frames in float)."""
    span = int(t[-1]) - int(t[0]) if int_span and t.dtype.kind != "f" else float(t[-1]) - float(t[0])
    return float(t[0]), steps / (span or 1)


def _supported(x, y, t, p) -> bool:
    """Dtypes the kernels compile for (native byte order; float16 and big-endian data take the numpy
    path), and finite first/last timestamps (the numpy path defines what NaN/inf ends give)."""
    if not all(a.dtype.isnative for a in (x, y, t, p)):
        return False
    if t.dtype.kind == "f":
        return t.dtype.itemsize >= 4 and bool(np.isfinite(t[0]) and np.isfinite(t[-1]))
    return t.dtype.kind in "ui"


def _count_edges(n: int, num_frames: int) -> np.ndarray:
    """Equal-count split, remainder to the last frame (with fewer events than frames: all in the last)."""
    per = n // num_frames
    edges = np.minimum(np.arange(num_frames + 1, dtype=np.int64) * per, n) if per else np.zeros(num_frames + 1, np.int64)
    edges[-1] = n
    return edges


def voxel_grid(x, y, t, p, height: int, width: int, num_bins: int):
    """Un-normalised float32 ``[num_bins, height, width]``, or None: an event was rejected, or the stream
    is not for this kernel (float timestamps, spans from 2^31 µs: the numpy path serves those)."""
    if not _supported(x, y, t, p) or t.dtype.kind not in "ui":
        return None
    span = int(t[-1]) - int(t[0])
    if span >= 2**31 or abs(int(t[0])) >= 2**62:
        return None
    edges = _time_edges(t, *_time_frame(t, num_bins - 1, int_span=True), num_bins)
    return _voxel_int(x, y, t, p, height, width, edges, span or 1)


def count_frames(x, y, t, p, height: int, width: int, num_frames: int, by_time: bool):
    """float32 ``[num_frames, 2, height, width]`` counts, or None (rejected event / non-finite t ends)."""
    if not _supported(x, y, t, p):
        return None
    n, hw2 = x.shape[0], 2 * height * width
    if by_time:
        edges = _time_edges(t, *_time_frame(t, num_frames, int_span=False), num_frames)
    else:
        edges = _count_edges(n, num_frames)
    out = np.zeros(num_frames * hw2, dtype=np.float32)
    parts = _run(_count_range, n, edges, out, hw2, x, y, t, p, width, height)
    if parts is None:
        return None
    for k, part in parts:
        out[k * hw2 : (k + 1) * hw2] += part  # integers < 2^24 in float32: exact
    return out.reshape(num_frames, 2, height, width)


def eventgpt_frames(x, y, t, p, height: int, width: int, num_frames: int):
    """uint8 ``[num_frames, height, width, 3]`` EventGPT frames, or None (rejected event)."""
    if not _supported(x, y, t, p):
        return None
    n, hw = x.shape[0], height * width
    codes = np.zeros(num_frames * hw, dtype=np.uint8)
    parts = _run(_eventgpt_range, n, _count_edges(n, num_frames), codes, hw, x, y, t, p, width, height)
    if parts is None:
        return None
    for k, part in parts:  # the later range's events come later: its hits win
        frame = codes[k * hw : (k + 1) * hw]
        np.copyto(frame, part, where=part != 0)
    canvas = np.full((num_frames * hw, 3), 255, dtype=np.uint8)
    _codes_to_rgb(codes, canvas)
    return canvas.reshape(num_frames, height, width, 3)
