"""Lightweight adapter forward time beside a bare torch matmul of the same shapes, measured in the same run.

    python benchmarks/bench_adapters.py [--repeats 300] [--threads N] [--record benchmarks/RESULTS.md]

Cases (CLIP-L widths): pooled 1024 -> 1024 at batch 1 and 256; token-level 8 x 577 x 1024 (CLIP-336,
1 CLS + 24x24) -> 8 x 257 x 1024 (CLIP-224 grid, CLS kept). Baseline: ``torch.addmm(bias, x, W^T)`` on
the rows the adapter's linear layer sees (for tokens: the 257 resampled tokens, so the ratio shows
the cost of the grid resampling plus module overhead). Median over many repeats after warm-up,
under ``torch.inference_mode``.
"""

from __future__ import annotations

import argparse
import fcntl
import platform
import statistics
import sys
import time

import torch

from modeling_evalign.lightweight.configuration_lightweight import LightweightAlignmentConfig
from modeling_evalign.lightweight.modeling_lightweight import LightweightAlignmentModule
from modeling_evalign.token_grid import resample_token_grid


def median_ms(fn, repeats: int, warmup: int = 20) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def run(repeats: int) -> list[tuple[str, float, float]]:
    rows = []
    pooled = LightweightAlignmentModule(LightweightAlignmentConfig(event_dim=1024, target_dim=1024)).eval()
    w, b = pooled.proj.weight, pooled.proj.bias
    wt = w.T  # a view: addmm reads the transposed layout directly, no copy
    for batch in (1, 256):
        x = torch.randn(batch, 1024)
        n = repeats if batch == 1 else max(repeats // 5, 20)
        model_ms = median_ms(lambda x=x: pooled(event_features=x).aligned_features, n)
        base_ms = median_ms(lambda x=x: torch.addmm(b, x, wt), n)
        rows.append((f"pooled 1024->1024, batch {batch}", model_ms, base_ms))

    cfg = LightweightAlignmentConfig(event_dim=1024, target_dim=1024, source_grid=[24, 24], target_grid=[16, 16])
    tokens_model = LightweightAlignmentModule(cfg).eval()
    w, b = tokens_model.proj.weight, tokens_model.proj.bias
    wt = w.T
    x = torch.randn(8, 577, 1024)
    x257 = torch.randn(8 * 257, 1024)
    n = max(repeats // 10, 15)
    model_ms = median_ms(lambda: tokens_model(event_features=x).aligned_features, n)
    base_ms = median_ms(lambda: torch.addmm(b, x257, wt).view(8, 257, 1024), n)
    rows.append(("tokens 8x577x1024 -> 8x257x1024 (bilinear)", model_ms, base_ms))
    resample_ms = median_ms(lambda: resample_token_grid(x, (24, 24), (16, 16)), n)
    rows.append(("  of which grid resampling alone", resample_ms, base_ms))
    return rows


def table(rows) -> str:
    lines = ["| case | adapter ms | bare addmm ms | ratio |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {m:.3f} | {bse:.3f} | {m / bse:.2f} |" for name, m, bse in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--record", default=None, help="append the table to this markdown file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with torch.inference_mode():
        rows = run(args.repeats)
    text = table(rows)
    print(text)
    if args.record:
        header = (
            f"\n## Lightweight adapter forward (bench_adapters.py)\n\n"
            f"Command: `python benchmarks/bench_adapters.py {' '.join(argv if argv is not None else sys.argv[1:])}`  \n"
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; "
            "CPU shared with other jobs while measured (numbers are noisy).\n\n"
        )
        with open("/tmp/evalign-results.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with open(args.record, "a", encoding="utf-8") as f:
                f.write(header + text + "\n")


if __name__ == "__main__":
    main()
