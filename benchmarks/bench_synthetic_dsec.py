"""Synthetic DSEC generator: one process (the baseline) vs ``workers`` processes, same tree.

    python benchmarks/bench_synthetic_dsec.py [--sequences 4] [--seconds 4] [--workers 2]

Writes the same tree (the main job's sizes: 320x240 events, 480x360 RGB) once in-process and once with
``write_synthetic_dsec(..., workers=N)`` (spawned processes, one sequence each), checks that every event array,
PNG and timestamp file is identical, and prints wall time, sequences/s and the ratio. The main job writes its
tree this way while it pretrains its towers (``PipelineConfig.generator_workers``).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path


def _datasets(group) -> list[str]:
    names: list[str] = []
    group.visititems(lambda name, obj: names.append(name) if obj.__class__.__name__ == "Dataset" else None)
    return names


def _same_tree(a: list[Path], b: list[Path]) -> bool:
    import h5py
    import hdf5plugin  # noqa: F401

    for sa, sb in zip(a, b, strict=True):
        files = sorted(f.relative_to(sa) for f in sa.rglob("*") if f.is_file())
        if files != sorted(f.relative_to(sb) for f in sb.rglob("*") if f.is_file()):
            return False
        for f in files:
            if f.suffix == ".h5":  # HDF5 may stamp times in its headers: compare every dataset's bytes
                with h5py.File(sa / f, "r") as fa, h5py.File(sb / f, "r") as fb:
                    names = _datasets(fa)
                    if not names or any(name not in fb or fa[name][()].tobytes() != fb[name][()].tobytes()
                                        for name in names):
                        return False
            elif (sa / f).read_bytes() != (sb / f).read_bytes():
                return False
    return True


def main(argv=None) -> list[dict]:
    from modeling_evalign.events.synthetic_dsec import write_synthetic_dsec

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sequences", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    kw = dict(sequences=args.sequences, seconds=args.seconds, seed=0, image_size=(480, 360), sensor_size=(320, 240),
              photos=["astronaut", "coffee", "chelsea", "rocket"], progress=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        for name, workers in (("1 process (baseline)", 1), (f"{args.workers} processes", args.workers)):
            start = time.perf_counter()
            trees[name] = write_synthetic_dsec(Path(tmp) / str(workers), workers=workers, **kw)
            rows.append({"case": name, "seconds": time.perf_counter() - start})
        identical = _same_tree(*trees.values())
    base = rows[0]["seconds"]
    print(f"{args.sequences} sequences x {args.seconds:g} s, 320x240 events, 480x360 RGB; {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}, {platform.processor() or platform.machine()}")
    print(f"{'case':24s} {'wall s':>8s} {'seq/s':>7s} {'speedup':>8s}")
    for row in rows:
        print(f"{row['case']:24s} {row['seconds']:8.1f} {args.sequences / row['seconds']:7.2f} "
              f"{base / row['seconds']:7.2f}x")
    print(f"trees identical: {identical}")
    return rows


if __name__ == "__main__":
    main()
