"""Event representations against slow per-event float64 reference loops (numpy and torch paths)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from modeling_evalign.events import representations as rep
from modeling_evalign.events.representations import (
    count_frames,
    event_histogram_image,
    eventgpt_frames,
    voxel_grid,
)

H, W = 7, 11


@pytest.fixture(autouse=True, params=["torch-kernels", "cpu-via-numba", "cpu-via-numpy"])
def _torch_cpu_route(request, monkeypatch):
    """Run every test with CPU tensors on the torch kernels (as on GPU), and with numpy input and CPU
    tensors on the fused numba kernels or on the numpy implementations."""
    monkeypatch.setattr(rep, "CPU_TENSORS_VIA_NUMPY", request.param != "torch-kernels")
    monkeypatch.setattr(rep, "USE_NUMBA_KERNELS", request.param != "cpu-via-numpy")


def random_stream(n, seed=0, height=H, width=W, t_span=10_000, ties=True):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, width, n).astype(np.uint16)
    y = rng.integers(0, height, n).astype(np.uint16)
    t = np.sort(rng.integers(1_000, 1_000 + t_span, n)).astype(np.uint32)
    if ties and n > 4:
        t[1:3] = t[0]  # shared timestamps
    p = rng.integers(0, 2, n).astype(np.uint8)
    return x, y, t, p


def to_torch(x, y, t, p):
    return tuple(torch.from_numpy(a.astype(np.int64)) for a in (x, y, t, p))


def ref_voxel(x, y, t, p, bins, height, width, normalize):
    grid = np.zeros((bins, height, width), dtype=np.float64)
    if len(t):
        t0, t1 = int(t[0]), int(t[-1])
        span = (t1 - t0) or 1
        for xi, yi, ti, pi in zip(x, y, t, p):
            tn = (bins - 1) * (int(ti) - t0) / span
            left = math.floor(tn)
            frac = tn - left
            pol = 1.0 if pi == 1 else -1.0
            grid[left, yi, xi] += pol * (1 - frac)
            if left + 1 < bins:
                grid[left + 1, yi, xi] += pol * frac
    if normalize:
        nz = grid != 0
        if nz.any():
            vals = grid[nz]
            grid[nz] = (vals - vals.mean()) / max(vals.std(), 1e-6)
    return grid


@pytest.mark.parametrize("bins", [1, 2, 5])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_voxel_grid_matches_reference(bins, normalize, backend):
    ev = random_stream(500, seed=bins)
    ref = ref_voxel(*ev, bins, H, W, normalize)
    args = to_torch(*ev) if backend == "torch" else ev
    out = voxel_grid(*args, num_bins=bins, height=H, width=W, normalize=normalize)
    assert isinstance(out, torch.Tensor if backend == "torch" else np.ndarray)
    out = out.numpy() if backend == "torch" else out
    assert out.dtype == np.float32 and out.shape == (bins, H, W)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    if normalize:
        nz = out[out != 0]
        assert abs(nz.mean()) < 1e-5 and abs(nz.std() - 1) < 1e-4


def test_voxel_grid_edge_cases():
    # single timestamp: everything in bin 0 with full weight (dt = 0 -> 1)
    x = np.array([1, 2, 1])
    y = np.array([0, 0, 0])
    t = np.array([5, 5, 5])
    p = np.array([1, 0, 1])
    g = voxel_grid(x, y, t, p, 3, 2, 3)
    assert g[0, 0, 1] == 2 and g[0, 0, 2] == -1 and np.count_nonzero(g[1:]) == 0
    # empty window: zeros of the documented shape, both backends
    e = np.zeros(0, dtype=np.int64)
    assert not voxel_grid(e, e, e, e, 4, 2, 3, normalize=True).any()
    te = torch.zeros(0, dtype=torch.int64)
    assert voxel_grid(te, te, te, te, 4, 2, 3).shape == (4, 2, 3)
    # a constant non-zero grid normalises with the std floor instead of dividing by 0
    g = voxel_grid(np.array([0]), np.array([0]), np.array([7]), np.array([1]), 2, 1, 1, normalize=True)
    assert np.isfinite(g).all() and g[0, 0, 0] == 0 and g[1, 0, 0] == 0


def ref_eventgpt(x, y, t, p, height, width, frames):
    out = np.full((frames, height, width, 3), 255, dtype=np.uint8)
    n = len(x)
    per = n // frames
    for i in range(n):
        f = frames - 1 if per == 0 else min(i // per, frames - 1)
        out[f, y[i], x[i]] = (255, 0, 0) if p[i] == 1 else (0, 0, 255)
    return out


@pytest.mark.parametrize("n", [0, 3, 53, 400])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_eventgpt_frames_matches_reference(n, backend):
    ev = random_stream(n, seed=n)
    ref = ref_eventgpt(*ev, H, W, 5)
    args = to_torch(*ev) if backend == "torch" else ev
    out = eventgpt_frames(*args, height=H, width=W, num_frames=5)
    out = out.numpy() if backend == "torch" else out
    assert out.dtype == np.uint8 and out.shape == (5, H, W, 3)
    np.testing.assert_array_equal(out, ref)


def test_eventgpt_last_event_wins_and_remainder():
    # 7 events, 3 frames: 2, 2, 3 events; in the last frame pixel (0,0) is hit by p=1 then p=0
    x = np.array([0, 1, 0, 1, 0, 1, 0])
    y = np.zeros(7, dtype=int)
    t = np.arange(7)
    p = np.array([1, 1, 0, 0, 1, 1, 0])
    f = eventgpt_frames(x, y, t, p, 1, 3, num_frames=3)
    assert tuple(f[0, 0, 0]) == (255, 0, 0) and tuple(f[1, 0, 0]) == (0, 0, 255)
    assert tuple(f[2, 0, 0]) == (0, 0, 255) and tuple(f[2, 0, 1]) == (255, 0, 0)
    assert tuple(f[2, 0, 2]) == (255, 255, 255)


def ref_counts(x, y, t, p, height, width, frames, split):
    out = np.zeros((frames, 2, height, width), dtype=np.float64)
    n = len(x)
    if not n:
        return out
    t0, t1 = float(t[0]), float(t[-1])
    span = (t1 - t0) or 1.0
    per = n // frames
    for i in range(n):
        if split == "time":
            f = min(int(math.floor(frames * (float(t[i]) - t0) / span)), frames - 1)
        else:
            f = frames - 1 if per == 0 else min(i // per, frames - 1)
        out[f, p[i], y[i], x[i]] += 1
    return out


@pytest.mark.parametrize("split", ["time", "count"])
@pytest.mark.parametrize("frames", [1, 3])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_count_frames_matches_reference(split, frames, backend):
    ev = random_stream(300, seed=frames)
    ref = ref_counts(*ev, H, W, frames, split)
    args = to_torch(*ev) if backend == "torch" else ev
    out = count_frames(*args, height=H, width=W, num_frames=frames, split=split)
    out = out.numpy() if backend == "torch" else out
    assert out.dtype == np.float32 and out.shape == (frames, 2, H, W)
    np.testing.assert_array_equal(out, ref)
    assert out.sum() == 300


def ref_histogram(x, y, p, height, width, k=10.0):
    c = np.zeros((2, height, width))
    for xi, yi, pi in zip(x, y, p):
        c[pi, yi, xi] += 1
    nz = [v for v in c.ravel() if v > 0]  # one threshold over both polarities
    if nz:
        mean = sum(nz) / len(nz)
        std = math.sqrt(sum((v - mean) ** 2 for v in nz) / len(nz))
        c[c > mean + k * std] = 0
    if c.max() > 0:
        c /= c.max()
    img = np.zeros((height, width, 3))
    img[..., 0], img[..., 2] = c[1], c[0]
    return img


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_event_histogram_image_matches_reference_and_drops_hot_pixel(backend):
    hh, ww = 20, 30
    x, y, t, p = random_stream(3000, seed=3, height=hh, width=ww)
    # a hot positive pixel: 500 extra events at (5, 4)
    x = np.concatenate([x, np.full(500, 5, np.uint16)])
    y = np.concatenate([y, np.full(500, 4, np.uint16)])
    t = np.concatenate([t, np.full(500, t[-1])])
    p = np.concatenate([p, np.ones(500, np.uint8)])
    ref = ref_histogram(x, y, p, hh, ww)
    assert ref[4, 5, 0] == 0  # the reference itself removes it
    args = to_torch(x, y, t, p) if backend == "torch" else (x, y, t, p)
    out = event_histogram_image(*args, height=hh, width=ww)
    out = out.numpy() if backend == "torch" else out
    assert out.dtype == np.float32 and out.shape == (hh, ww, 3)
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-7)
    assert out.max() == 1.0 and not out[..., 1].any()
    e = np.zeros(0, dtype=np.int64)
    assert not event_histogram_image(e, e, e, e, hh, ww).any()


@pytest.mark.parametrize(
    "field, change, match",
    [
        ("x", lambda e: e["x"].__setitem__(3, W), r"x\[3\] = 11 is outside the sensor"),
        ("y", lambda e: e["y"].__setitem__(0, H + 5), r"y\[0\] = 12 is outside the sensor"),
        ("t", lambda e: e["t"].__setitem__(10, 0), r"t must be non-decreasing.*t\[10\] = 0"),
        ("p", lambda e: e["p"].__setitem__(4, 2), r"p \(polarity\) must be 0 or 1, got p\[4\] = 2"),
    ],
)
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_bad_input_raises_naming_field(field, change, match, backend):
    x, y, t, p = random_stream(50, seed=1, ties=False)
    ev = {"x": x.astype(np.int64), "y": y.astype(np.int64), "t": t.astype(np.int64), "p": p.astype(np.int64)}
    change(ev)
    args = [ev[k] for k in "xytp"]
    if backend == "torch":
        args = [torch.from_numpy(a) for a in args]
    for fn in (
        lambda: voxel_grid(*args, num_bins=3, height=H, width=W),
        lambda: eventgpt_frames(*args, height=H, width=W),
        lambda: count_frames(*args, height=H, width=W),
    ):
        with pytest.raises(ValueError, match=match):
            fn()


def test_bad_shapes_and_types():
    x, y, t, p = random_stream(10)
    with pytest.raises(ValueError, match="one length"):
        voxel_grid(x[:5], y, t, p, 2, H, W)
    with pytest.raises(TypeError, match="all be numpy arrays or all torch"):
        voxel_grid(torch.from_numpy(x.astype(np.int64)), y, t, p, 2, H, W)
    with pytest.raises(TypeError, match="x must hold integers"):
        voxel_grid(x.astype(np.float32), y, t, p, 2, H, W)
    with pytest.raises(ValueError, match="num_bins must be a positive int"):
        voxel_grid(x, y, t, p, 0, H, W)
    with pytest.raises(ValueError, match="height must be a positive int"):
        voxel_grid(x, y, t, p, 2, 0, W)
    with pytest.raises(ValueError, match="split must be"):
        count_frames(x, y, t, p, H, W, split="bogus")


def test_dsec_uint16_tensors_match_numpy():
    # DSEC stores x/y as uint16; torch has no min/max for that dtype, so validation must widen
    rng = np.random.default_rng(7)
    n, h, w = 400, 30, 40
    x, y = rng.integers(0, w, n).astype(np.uint16), rng.integers(0, h, n).astype(np.uint16)
    t, p = np.sort(rng.integers(0, 10_000, n)), rng.integers(0, 2, n).astype(np.uint8)
    tx, ty, tt, tp = (torch.from_numpy(a) for a in (x, y, t, p))
    # the torch kernels (GPU path) sum in another order: equal up to float32 rounding
    np.testing.assert_allclose(voxel_grid(tx, ty, tt, tp, 5, h, w).numpy(), voxel_grid(x, y, t, p, 5, h, w), atol=1e-6)
    np.testing.assert_array_equal(count_frames(tx, ty, tt, tp, h, w).numpy(), count_frames(x, y, t, p, h, w))
    np.testing.assert_array_equal(np.asarray(eventgpt_frames(tx, ty, tt, tp, h, w)), eventgpt_frames(x, y, t, p, h, w))
    with pytest.raises(ValueError, match=r"x\[\d+\] = 40 is outside the sensor"):
        voxel_grid(torch.cat([tx, torch.tensor([40], dtype=torch.uint16)]), torch.cat([ty, ty[:1]]),
                   torch.cat([tt, tt[-1:]]), torch.cat([tp, tp[:1]]), 5, h, w)
