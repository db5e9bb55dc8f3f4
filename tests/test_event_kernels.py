"""The fused numba kernels (events/kernels.py) against the numpy implementations they replace (the
previous code, kept as the fallback) and against float64 per-event reference loops: dtypes, thread
splits inside a bin, counter overflow spills, edge cases and the named errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from test_representations import ref_counts, ref_eventgpt, ref_voxel

from modeling_evalign.events import kernels
from modeling_evalign.events import representations as rep

H, W = 9, 13


def numpy_path(fn, *args, **kwargs):
    """The previous (numpy) implementation of ``fn``."""
    old = rep.USE_NUMBA_KERNELS
    rep.USE_NUMBA_KERNELS = False
    try:
        return fn(*args, **kwargs)
    finally:
        rep.USE_NUMBA_KERNELS = old


@pytest.fixture(params=[1, 3], ids=["1-thread", "3-threads"])
def threads(request, monkeypatch):
    """1 thread, or 3 threads even for tiny streams (so ranges meet inside bins and frames)."""
    monkeypatch.setattr(kernels, "num_threads", lambda n: request.param)
    return request.param


def stream(n, seed, dtypes=("uint16", "uint16", "uint32", "uint8"), t_span=5_000, height=H, width=W):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, width, n).astype(dtypes[0])
    y = rng.integers(0, height, n).astype(dtypes[1])
    t = np.sort(rng.integers(1_000, 1_000 + t_span, n)).astype(dtypes[2])
    p = rng.integers(0, 2, n).astype(dtypes[3])
    return x, y, t, p


DTYPES = [
    ("uint16", "uint16", "uint32", "uint8"),  # DSEC
    ("int64", "int64", "int64", "int64"),  # torch's default integer / generic numpy
    ("int32", "uint16", "float64", "bool"),  # float timestamps (float64 path), boolean polarity
]


@pytest.mark.parametrize("dtypes", DTYPES, ids=lambda d: "-".join(d))
@pytest.mark.parametrize("n", [1, 2, 7, 400])
def test_fused_equal_numpy_path_and_reference(dtypes, n, threads):
    x, y, t, p = stream(n, seed=n, dtypes=dtypes)
    pi = p.astype(np.int64)  # the reference loops index with p
    for bins in (1, 2, 5):
        fused = rep.voxel_grid(x, y, t, p, bins, H, W)
        old = numpy_path(rep.voxel_grid, x, y, t, p, bins, H, W)
        assert fused.dtype == np.float32 and fused.shape == (bins, H, W)
        # integer t: exact integer sums rounded once, bit for bit the float64 sums cast (float t: numpy path)
        np.testing.assert_array_equal(fused, old)
        np.testing.assert_allclose(fused, ref_voxel(x, y, t, pi, bins, H, W, False), rtol=1e-6, atol=1e-6)
        normed = rep.voxel_grid(x, y, t, p, bins, H, W, normalize=True)
        np.testing.assert_array_max_ulp(normed, numpy_path(rep.voxel_grid, x, y, t, p, bins, H, W, True), maxulp=1)
        np.testing.assert_allclose(normed, ref_voxel(x, y, t, pi, bins, H, W, True), rtol=1e-5, atol=1e-5)
    for frames, split in ((1, "time"), (3, "time"), (4, "count"), (n + 2, "count")):
        fused = rep.count_frames(x, y, t, p, H, W, frames, split)
        assert fused.dtype == np.float32 and fused.shape == (frames, 2, H, W)
        np.testing.assert_array_equal(fused, numpy_path(rep.count_frames, x, y, t, p, H, W, frames, split))
        np.testing.assert_array_equal(fused, ref_counts(x, y, t, pi, H, W, frames, split))
    for frames in (1, 5):
        fused = rep.eventgpt_frames(x, y, t, p, H, W, frames)
        np.testing.assert_array_equal(fused, numpy_path(rep.eventgpt_frames, x, y, t, p, H, W, frames))
        np.testing.assert_array_equal(fused, ref_eventgpt(x, y, t, pi, H, W, frames))
    hist = rep.event_histogram_image(x, y, t, p, H, W)
    np.testing.assert_array_equal(hist, numpy_path(rep.event_histogram_image, x, y, t, p, H, W))


def test_cpu_tensors_use_the_kernels_and_match(threads):
    x, y, t, p = stream(300, seed=4)
    tx, ty, tt, tp = (torch.from_numpy(a) for a in (x, y, t, p))  # uint16 / uint32 / uint8 tensors
    out = rep.voxel_grid(tx, ty, tt, tp, 5, H, W)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), numpy_path(rep.voxel_grid, x, y, t, p, 5, H, W))
    frames = rep.eventgpt_frames(tx, ty, tt, tp, H, W)
    assert isinstance(frames, torch.Tensor) and frames.dtype == torch.uint8
    np.testing.assert_array_equal(frames.numpy(), ref_eventgpt(x, y, t, p, H, W, 5))


def test_edge_cases(threads):
    # all events at one timestamp: bin 0 / frame 0 with full weight; border pixels
    x = np.array([0, W - 1, 0, W - 1, 0], dtype=np.uint16)
    y = np.array([0, H - 1, H - 1, 0, 0], dtype=np.uint16)
    t = np.full(5, 77, dtype=np.uint32)
    p = np.array([1, 0, 1, 1, 1], dtype=np.uint8)
    g = rep.voxel_grid(x, y, t, p, 3, H, W)
    assert g[0, 0, 0] == 2 and g[0, H - 1, W - 1] == -1 and g[0, H - 1, 0] == 1 and not g[1:].any()
    np.testing.assert_array_equal(rep.count_frames(x, y, t, p, H, W, 2, "time")[1], 0)
    # a single event
    one = [a[:1] for a in (x, y, t, p)]
    assert rep.voxel_grid(*one, 4, H, W).sum() == 1 and rep.count_frames(*one, H, W, 3, "count")[2].sum() == 1
    # empty: zeros / white, as before
    e = np.zeros(0, dtype=np.uint16)
    assert not rep.voxel_grid(e, e, e, e, 2, H, W, normalize=True).any()
    assert (rep.eventgpt_frames(e, e, e, e, H, W) == 255).all()


def test_counter_overflow_spills_stay_exact(threads):
    # 700 events on one pixel per polarity (uint8 counters spill at 256) and, with a 2^31 - 2 µs span,
    # sums of pol * r past int32 (the integer voxel path spills them to int64)
    rng = np.random.default_rng(5)
    n = 1500
    x = np.where(rng.random(n) < 0.95, 3, rng.integers(0, W, n)).astype(np.uint16)
    y = np.where(x == 3, 4, rng.integers(0, H, n)).astype(np.uint16)
    t = np.sort(rng.integers(0, 2**31 - 1, n)).astype(np.int64)
    p = (rng.random(n) < 0.7).astype(np.uint8)
    for bins in (2, 3):
        fused = rep.voxel_grid(x, y, t, p, bins, H, W)
        np.testing.assert_array_max_ulp(fused, numpy_path(rep.voxel_grid, x, y, t, p, bins, H, W), maxulp=0)
        np.testing.assert_allclose(fused, ref_voxel(x, y, t, p, bins, H, W, False), rtol=1e-6)
    counts = rep.count_frames(x, y, t, p, H, W, 2, "count")
    assert counts.max() > 300
    np.testing.assert_array_equal(counts, ref_counts(x, y, t, p, H, W, 2, "count"))
    # a span past 2^31 µs takes the numpy path: same values
    t2 = t * 4
    np.testing.assert_array_equal(rep.voxel_grid(x, y, t2, p, 3, H, W), numpy_path(rep.voxel_grid, x, y, t2, p, 3, H, W))


@pytest.mark.parametrize(
    "field, index, value, match",
    [
        ("x", 250, W, rf"x\[250\] = {W} is outside the sensor"),
        ("y", 399, H + 1, rf"y\[399\] = {H + 1} is outside the sensor"),
        ("t", 300, 0, r"t must be non-decreasing.*t\[300\] = 0"),
        ("p", 201, 2, r"p \(polarity\) must be 0 or 1, got p\[201\] = 2"),
    ],
)
def test_bad_event_in_any_range_raises_the_named_error(field, index, value, match, threads):
    ev = dict(zip("xytp", (a.astype(np.int64) for a in stream(400, seed=6))))
    ev[field][index] = value
    for fn in (
        lambda: rep.voxel_grid(*ev.values(), 3, H, W),
        lambda: rep.count_frames(*ev.values(), H, W, 2, "time"),
        lambda: rep.eventgpt_frames(*ev.values(), H, W),
    ):
        with pytest.raises(ValueError, match=match):
            fn()


def test_nan_float16_and_big_endian_input_behave_as_before(threads):
    x, y, t, p = stream(50, seed=8, dtypes=("uint16", "uint16", "float64", "uint8"))
    t_nan = t.copy()
    t_nan[20] = np.nan  # passes validation (NaN compares false): the kernels hand over to the numpy path
    for ev in ((x, y, t_nan, p), (x, y, t.astype(np.float16), p), (x.astype(">u2"), y, t.astype(">f8"), p)):
        for fused, old in (
            (rep.voxel_grid(*ev, 3, H, W), numpy_path(rep.voxel_grid, *ev, 3, H, W)),
            (rep.count_frames(*ev, H, W, 3), numpy_path(rep.count_frames, *ev, H, W, 3)),
        ):
            np.testing.assert_array_equal(fused, old)


def test_numba_is_imported_only_on_first_use():
    code = (
        "import sys, numpy as np, modeling_evalign, modeling_evalign.events.representations as r\n"
        "before = 'numba' in sys.modules\n"
        "a = np.array([1, 2], dtype=np.uint16)\n"
        "r.voxel_grid(a, a, a, a % 2, 2, 4, 4)\n"
        "print(before, 'numba' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.split() == ["False", "True"]


def _voxel_sum(seed):
    x, y, t, p = stream(2000, seed=seed)
    return float(np.abs(rep.voxel_grid(x, y, t, p, 5, H, W)).sum())


def test_forked_worker_after_use_in_parent(monkeypatch):
    # DataLoader workers fork after the parent ran the kernels: threads are per call, so nothing is
    # left to deadlock in the child
    import multiprocessing

    monkeypatch.setattr(kernels, "num_threads", lambda n: 2)
    expected = _voxel_sum(9)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply_async(_voxel_sum, (9,)).get(timeout=120) == expected
