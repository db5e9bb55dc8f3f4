#!/usr/bin/env python
"""Event-representation and DSEC-read throughput.

1. 10M random events, 640x480, 5 bins: our voxel grid / count frames (numpy, torch CPU) against
   tonic's to_voxel_grid_numpy / to_frame_numpy (benchmark-only import: tonic is GPL) and against a
   plain np.add.at implementation. Ratios are time(baseline) / time(ours).
2. Reading 1 s windows (~2M events) from a Blosc-zstd events.h5 written by DsecEventWriter, for
   several HDF5 chunk sizes, in M events/s.

Usage: python benchmarks/bench_events.py [--events 10000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

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


def bench_representations(n, repeats):
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

    rows = []
    base_v = best_of(lambda: to_voxel_grid_numpy(structured.copy(), (W, H, 2), BINS), repeats)
    addat_v = best_of(lambda: add_at_voxel(x, y, t, p), repeats)
    ours_v = best_of(lambda: voxel_grid(x, y, t, p, BINS, H, W), repeats)
    ours_vt = best_of(lambda: voxel_grid(tx, ty, tt, tp, BINS, H, W), repeats)
    for name, sec in [
        ("tonic to_voxel_grid_numpy", base_v),
        ("np.add.at voxel grid", addat_v),
        ("evalign voxel_grid (numpy)", ours_v),
        ("evalign voxel_grid (torch CPU)", ours_vt),
    ]:
        rows.append((name, sec, base_v / sec, addat_v / sec))
    base_f = best_of(lambda: to_frame_numpy(structured.copy(), (W, H, 2), n_event_bins=BINS), repeats)
    addat_f = best_of(lambda: add_at_frames(x, y, t, p), repeats)
    ours_f = best_of(lambda: count_frames(x, y, t, p, H, W, num_frames=BINS, split="count"), repeats)
    ours_ft = best_of(lambda: count_frames(tx, ty, tt, tp, H, W, num_frames=BINS, split="count"), repeats)
    for name, sec in [
        ("tonic to_frame_numpy (n_event_bins)", base_f),
        ("np.add.at count frames", addat_f),
        ("evalign count_frames (numpy)", ours_f),
        ("evalign count_frames (torch CPU)", ours_ft),
    ]:
        rows.append((name, sec, base_f / sec, addat_f / sec))
    print(f"\n{n / 1e6:.0f}M events, {W}x{H}, {BINS} bins (best of {repeats})")
    print("| method | time (s) | x vs tonic | x vs np.add.at |\n|---|---|---|---|")
    for name, sec, r1, r2 in rows:
        print(f"| {name} | {sec:.3f} | {r1:.1f} | {r2:.1f} |")
    # check the fast paths agree with the baselines they are timed against
    np.testing.assert_allclose(voxel_grid(x, y, t, p, BINS, H, W), add_at_voxel(x, y, t, p), atol=1e-3)
    np.testing.assert_array_equal(count_frames(x, y, t, p, H, W, BINS, "count"), add_at_frames(x, y, t, p))


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
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--torch-threads", type=int, default=1, help="torch CPU threads (1: shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.torch_threads)
    print(f"torch threads {torch.get_num_threads()}; numpy {np.__version__}; torch {torch.__version__}")
    bench_representations(args.events, args.repeats)
    bench_reading(args.repeats)


if __name__ == "__main__":
    main()
