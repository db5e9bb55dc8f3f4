#!/usr/bin/env python
"""Event-representation and DSEC-read throughput.

1. 10M random events, 640x480, 5 bins: our voxel grid / count frames (fused numba kernels on 1 and on
   N threads, the numpy implementation they replaced, CPU tensors) against tonic's
   to_voxel_grid_numpy / to_frame_numpy (benchmark-only import: tonic is GPL) and a plain np.add.at
   implementation, all in the same run, interleaved round by round so that load from other jobs hits
   every method alike. Times are medians over the rounds (min in brackets); ratios are
   median(baseline) / median(ours). The first-call cost of the kernels (numba compile, then the
   on-disk cache) is measured in fresh interpreters with an empty NUMBA_CACHE_DIR.
2. Reading 1 s windows (~2M events) from a Blosc-zstd events.h5 written by DsecEventWriter, for
   several HDF5 chunk sizes, in M events/s.

Usage: python benchmarks/bench_events.py [--events 10000000] [--repeats 5] [--threads 2] [--skip-reading]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from modeling_evalign.events import representations as rep
from modeling_evalign.events.dsec_reader import DsecEventReader
from modeling_evalign.events.dsec_writer import DsecEventWriter
from modeling_evalign.events.representations import count_frames, voxel_grid

H, W, BINS = 480, 640, 5


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def interleaved(methods: dict, repeats: int) -> dict:
    """{name: [seconds per round]}: every method once per round, ``repeats`` rounds (after a warm-up)."""
    times = {name: [] for name in methods}
    for fn in methods.values():
        fn()
    for _ in range(repeats):
        for name, fn in methods.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def add_at_voxel(x, y, t, p):
    """The plain np.add.at version (same E2VID semantics)."""
    grid = np.zeros(BINS * H * W)
    tn = (BINS - 1) * (t - t[0]) / max(int(t[-1]) - int(t[0]), 1)
    left = tn.astype(np.int64)
    frac = tn - left
    pol = p.astype(np.float64) * 2 - 1
    idx = x.astype(np.int64) + y.astype(np.int64) * W + left * H * W
    np.add.at(grid, idx, pol * (1 - frac))
    ok = left + 1 < BINS
    np.add.at(grid, idx[ok] + H * W, (pol * frac)[ok])
    return grid.reshape(BINS, H, W)


def add_at_frames(x, y, t, p):
    out = np.zeros((BINS, 2, H, W))
    per = len(x) // BINS
    f = np.minimum(np.arange(len(x)) // per, BINS - 1)
    np.add.at(out, (f, p.astype(np.int64), y.astype(np.int64), x.astype(np.int64)), 1)
    return out


def with_threads(fn, threads):
    def run():
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return fn()
        finally:
            torch.set_num_threads(old)

    return run


def numpy_path(fn):
    def run():
        rep.USE_NUMBA_KERNELS = False
        try:
            return fn()
        finally:
            rep.USE_NUMBA_KERNELS = True

    return run


_FIRST_CALL = """
import sys, time, numpy as np
from modeling_evalign.events.representations import count_frames, eventgpt_frames, voxel_grid
t0 = time.perf_counter(); import numba; print("import_numba", time.perf_counter() - t0)
x = np.arange(1000, dtype=np.uint16) % 640; t = np.arange(1000, dtype={t}); p = (x % 2).astype(np.uint8)
for name, fn in (("voxel_grid", lambda: voxel_grid(x, x % 480, t, p, 5, 480, 640)),
                 ("count_frames", lambda: count_frames(x, x % 480, t, p, 480, 640, 5, "count")),
                 ("eventgpt_frames", lambda: eventgpt_frames(x, x % 480, t, p, 480, 640))):
    t0 = time.perf_counter(); fn(); print(name, time.perf_counter() - t0)
"""


def first_call_costs(t_dtype="np.int64") -> dict:
    """{kernel: (seconds with an empty cache, seconds with the cache)} in fresh interpreters (the
    first includes importing numba)."""
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for _ in ("cold", "cached"):
            text = subprocess.run(
                [sys.executable, "-c", _FIRST_CALL.format(t=t_dtype)], env=env, check=True,
                capture_output=True, text=True,
            ).stdout
            for line in text.split("\n"):
                if line.strip():
                    name, sec = line.split()
                    out.setdefault(name, []).append(float(sec))
    return out


def bench_representations(n, repeats, threads):
    from tonic.functional import to_frame_numpy, to_voxel_grid_numpy

    rng = np.random.default_rng(0)
    x = rng.integers(0, W, n).astype(np.uint16)
    y = rng.integers(0, H, n).astype(np.uint16)
    t = np.sort(rng.integers(0, 1_000_000, n)).astype(np.int64)
    p = rng.integers(0, 2, n).astype(np.uint8)
    structured = np.zeros(n, dtype=[("x", int), ("y", int), ("t", int), ("p", int)])
    for k, v in zip("xytp", (x, y, t, p)):
        structured[k] = v
    tx, ty, tt, tp = (torch.from_numpy(a.astype(np.int64)) for a in (x, y, t, p))

    voxel = lambda: voxel_grid(x, y, t, p, BINS, H, W)  # noqa: E731
    frames = lambda: count_frames(x, y, t, p, H, W, num_frames=BINS, split="count")  # noqa: E731
    cases = {
        "voxel grid": {
            "tonic to_voxel_grid_numpy": lambda: to_voxel_grid_numpy(structured.copy(), (W, H, 2), BINS),
            "np.add.at voxel grid": lambda: add_at_voxel(x, y, t, p),
            "evalign voxel_grid, numpy (previous)": numpy_path(voxel),
            "evalign voxel_grid, numba 1 thread": with_threads(voxel, 1),
            f"evalign voxel_grid, numba {threads} threads": with_threads(voxel, threads),
            f"evalign voxel_grid, int64 CPU tensors, {threads} threads": with_threads(
                lambda: voxel_grid(tx, ty, tt, tp, BINS, H, W), threads
            ),
        },
        "count frames": {
            "tonic to_frame_numpy (n_event_bins)": lambda: to_frame_numpy(
                structured.copy(), (W, H, 2), n_event_bins=BINS
            ),
            "np.add.at count frames": lambda: add_at_frames(x, y, t, p),
            "evalign count_frames, numpy (previous)": numpy_path(frames),
            "evalign count_frames, numba 1 thread": with_threads(frames, 1),
            f"evalign count_frames, numba {threads} threads": with_threads(frames, threads),
            f"evalign count_frames, int64 CPU tensors, {threads} threads": with_threads(
                lambda: count_frames(tx, ty, tt, tp, H, W, num_frames=BINS, split="count"), threads
            ),
        },
    }
    # the fast paths agree with the baselines they are timed against (and with the previous code)
    np.testing.assert_allclose(voxel(), add_at_voxel(x, y, t, p), atol=1e-3)
    np.testing.assert_array_equal(voxel(), numpy_path(voxel)())
    np.testing.assert_array_equal(frames(), add_at_frames(x, y, t, p))
    print(f"\n{n / 1e6:.0f}M events, {W}x{H}, {BINS} bins; median of {repeats} interleaved rounds (min)")
    print("| method | time (s) | x vs tonic | x vs np.add.at |\n|---|---|---|---|")
    for methods in cases.values():
        times = interleaved(methods, repeats)
        med = {k: float(np.median(v)) for k, v in times.items()}
        base, addat = list(med.values())[:2]
        for name, sec in med.items():
            print(f"| {name} | {sec:.4f} ({min(times[name]):.4f}) | {base / sec:.1f} | {addat / sec:.1f} |")
    costs = first_call_costs()
    print("\nFirst call on 1000 events in a fresh interpreter (s): empty numba cache (compile) / cached")
    print("| kernel | compile | cached |\n|---|---|---|")
    for name, (cold, cached) in costs.items():
        print(f"| {name} | {cold:.2f} | {cached:.2f} |")


def bench_reading(repeats, chunks=(1 << 14, 1 << 17, 1 << 20), rate=2_000_000, seconds=5):
    """zstd (as DSEC) bit-shuffle clevel 3 (our writer's default) at each chunk size, then byte-shuffle
    clevel 1 and lz4 at 2^17 to show how codec-bound reads are."""
    rng = np.random.default_rng(1)
    n = rate * seconds
    t = np.sort(rng.integers(0, seconds * 1_000_000, n))
    # spatially clustered events (edges) compress more like real data than uniform noise
    cx = rng.integers(0, W, n // 1000).repeat(1000)
    x = np.clip(cx + rng.integers(-5, 6, n), 0, W - 1).astype(np.uint16)
    y = rng.integers(0, H, n).astype(np.uint16)
    p = rng.integers(0, 2, n).astype(np.uint8)
    print(
        f"\nReading 1 s windows ({rate / 1e6:.0f}M events each) from a {seconds} s Blosc-zstd file "
        f"(best of {repeats}, page cache warm)"
    )
    print(
        "| chunk (events), codec | file MB | write s | read M events/s | x vs first row |\n|---|---|---|---|---|"
    )
    base = None
    with tempfile.TemporaryDirectory() as d:
        configs = [(c, "zstd", 3, "bit") for c in chunks] + [
            (1 << 17, "zstd", 1, "byte"),
            (1 << 17, "lz4", 3, "bit"),
        ]
        for chunk, cname, clevel, shuffle in configs:
            path = Path(d) / f"events_{chunk}_{cname}_{clevel}_{shuffle}.h5"
            t0 = time.perf_counter()
            w = DsecEventWriter(
                path, t_offset=1_000_000, chunk_events=chunk, cname=cname, clevel=clevel, shuffle=shuffle
            )
            for s in range(0, n, 1_000_000):
                w.append(
                    x[s : s + 1_000_000], y[s : s + 1_000_000], t[s : s + 1_000_000], p[s : s + 1_000_000]
                )
            w.close(seconds * 1_000_000)
            write_s = time.perf_counter() - t0
            reader = DsecEventReader(path, height=H, width=W)
            starts = [1_000_000 + k * 1_000_000 for k in range(seconds)]
            counts = []

            def read_all(reader=reader, starts=starts, counts=counts):
                counts.clear()
                for s in starts:
                    counts.append(len(reader.read_window(s, s + 1_000_000)))

            sec = best_of(read_all, repeats)
            speed = sum(counts) / sec / 1e6
            base = base or speed
            print(
                f"| {chunk} {cname} clevel {clevel} {shuffle}-shuffle | {path.stat().st_size / 1e6:.0f} | {write_s:.1f} | {speed:.0f} | {speed / base:.2f} |"
            )
            reader.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="threads for the multi-threaded rows")
    ap.add_argument("--skip-reading", action="store_true", help="only the representations")
    args = ap.parse_args()
    torch.set_num_threads(1)  # the torch CPU kernels of the baselines; our rows set their own
    import numba

    print(f"numpy {np.__version__}; numba {numba.__version__}; torch {torch.__version__}; {os.cpu_count()} CPUs")
    bench_representations(args.events, args.repeats, args.threads)
    if not args.skip_reading:
        bench_reading(3)


if __name__ == "__main__":
    main()
