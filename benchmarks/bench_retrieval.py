"""Retrieval recall speed and memory: chunked ``retrieval_recall`` vs a naive full-matrix baseline.

Each measurement runs in its own subprocess so its peak resident memory is its own:
``peak RSS growth`` = peak RSS during the call minus RSS just before it (inputs already allocated).

    .venv/bin/python benchmarks/bench_retrieval.py                    # N=20k timing + N=100k memory
    .venv/bin/python benchmarks/bench_retrieval.py --big-n 0          # skip the (slow) N=100k run

Targets: N=20k, D=512 in under 3 s on 2 cores; N=100k with under 2 GB extra memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

GIB = 1024**3


def _rss_bytes(field: str) -> int:
    """VmRSS / VmHWM (peak) of this process from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    # writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0)
    Path("/proc/self/clear_refs").write_text("5")


def naive_recall(query: torch.Tensor, gallery: torch.Tensor, ks=(1, 5, 10)) -> dict[str, float]:
    """The obvious implementation: the full N x N similarity matrix at once (same tie rule)."""
    q = torch.nn.functional.normalize(query, dim=1)
    g = torch.nn.functional.normalize(gallery, dim=1)
    sims = q @ g.t()
    ranks = (sims >= sims.diagonal()[:, None]).sum(dim=1) - 1
    return {f"R@{k}": float((ranks < k).double().mean()) for k in ks}


def worker(kind: str, n: int, dim: int, threads: int) -> dict:
    from modeling_evalign.evaluation.metrics import retrieval_recall

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    query = torch.randn(n, dim, generator=gen)
    gallery = torch.randn(n, dim, generator=gen).mul_(2.0).add_(query)  # in place: no temporaries
    fn = retrieval_recall if kind == "chunked" else naive_recall
    before = _rss_bytes("VmRSS")
    _reset_peak()
    start, cpu_start = time.perf_counter(), time.process_time()
    result = fn(query, gallery)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    growth = _rss_bytes("VmHWM") - before
    return {"kind": kind, "n": n, "dim": dim, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "rss_growth_bytes": growth, "recall": result}


def run_worker(kind: str, n: int, dim: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--n", str(n), "--dim", str(dim), "--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--big-n", type=int, default=100_000, help="0 to skip")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timing runs at --n (the best is reported)")
    parser.add_argument("--worker", choices=["chunked", "naive"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.dim, args.threads)))
        return

    rows = []
    for kind in ("naive", "chunked"):
        runs = [run_worker(kind, args.n, args.dim, args.threads) for _ in range(args.repeats)]
        best = min(runs, key=lambda r: r["cpu_seconds"])
        best["rss_growth_bytes"] = max(r["rss_growth_bytes"] for r in runs)
        rows.append(best)
    if rows[0]["recall"] != rows[1]["recall"]:
        raise SystemExit(f"chunked and naive recall differ: {rows[1]['recall']} vs {rows[0]['recall']}")
    if args.big_n:
        rows.append(run_worker("chunked", args.big_n, args.dim, args.threads))

    base = rows[0]
    print(f"retrieval recall R@1/5/10, one direction, D={args.dim}, {args.threads} threads, "
          f"best of {args.repeats} at N={args.n}")
    print("cpu s = process CPU time; cpu s / threads estimates the wall time on dedicated cores")
    print(f"{'method':<10} {'N':>8} {'seconds':>9} {'cpu s':>8} {'x naive':>8} {'peak RSS growth':>16} {'x naive':>8}")
    for r in rows:
        same_n = r["n"] == base["n"]
        t_ratio = f"{r['cpu_seconds'] / base['cpu_seconds']:.2f}" if same_n else "-"
        m_ratio = f"{r['rss_growth_bytes'] / base['rss_growth_bytes']:.2f}" if same_n else "-"
        print(f"{r['kind']:<10} {r['n']:>8} {r['seconds']:>9.2f} {r['cpu_seconds']:>8.2f} {t_ratio:>8} "
              f"{r['rss_growth_bytes'] / GIB:>12.3f} GiB {m_ratio:>8}")


if __name__ == "__main__":
    main()
