"""Full-size smoke run on CPU: real CLIP-L/14 shapes end to end, time and peak RSS per window.

    python benchmarks/bench_full_size.py [--windows 2] [--dtypes float32 bfloat16] [--data-dir DSEC_TREE]
        [--json out.json]

Random-weight towers built from the public configs (``features.clip_configs``, nothing downloaded):
CLIP-L/14-336 for events, CLIP-L/14 (224) as the Video-LLaVA target. Per window of a DSEC-layout tree
(default: a synthetic one written at DSEC's real sizes, 640x480 events and 1440x1080 RGB, 500 ms windows):

1. read the window from HDF5, render 5 EventGPT frames, decode the RGB PNG (``DsecWindows``);
2. CLIP preprocessing (5 frames 640x480 -> 336, RGB 1440x1080 -> 224);
3. event tower: tokens ``[5, 577, 1024]``, EventGPT pooling ``[582, 1024]``;
4. token-level lightweight adapter: the 577 spatial tokens (CLS + 24x24) resampled to 16x16 -> ``[256, 1024]``;
5. target tower: penultimate-layer patch tokens ``[256, 1024]`` (Video-LLaVA's image target; shapes must match);
6. reconstruction: voxel grids at 640x480 -> E2VID_lightweight (recurrent steps of 0.35 * W * H events)
   -> frame -> the 336 tower -> ``[577, 1024]``.

Baseline measured in the same run: a bare GEMM ``[2885, 1024] x [1024, 4096]`` in the same dtype; "x GEMM"
is a stage's time over the time its FLOPs would take at the bare GEMM's rate. Peak RSS per window: the
kernel's high-water mark (VmHWM) reset before each window (``/proc/self/clear_refs``).
Not a test: a timing record (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from modeling_evalign.features.clip_configs import random_clip_vision
from modeling_evalign.features.clip_preprocessing import clip_preprocess
from modeling_evalign.features.dsec_windows import DsecWindows
from modeling_evalign.features.extraction import _layer_tokens
from modeling_evalign.features.pooling import eventgpt_pool
from modeling_evalign.features.precision import autocast_context


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak_rss() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def peak_rss_mb() -> float:
    return _status_kb("VmHWM") / 1024


def gemm_rate(dtype: torch.dtype, repeats: int = 5) -> float:
    """FLOP/s of a bare GEMM of the MLP's shape for 5 frames of 577 tokens."""
    a, b = torch.randn(5 * 577, 1024, dtype=dtype), torch.randn(1024, 4096, dtype=dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * a.shape[0] * 1024 * 4096 * repeats / (time.perf_counter() - t0)


def flops_of(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


class Stages:
    """Wall time (and FLOPs, where counted) per stage of one window."""

    def __init__(self):
        self.ms: dict[str, float] = {}

    def run(self, name: str, fn):
        t0 = time.perf_counter()
        out = fn()
        self.ms[name] = (time.perf_counter() - t0) * 1e3
        return out


def build(device: str = "cpu"):
    from modeling_evalign.lightweight.configuration_lightweight import LightweightAlignmentConfig
    from modeling_evalign.lightweight.modeling_lightweight import LightweightAlignmentModule
    from modeling_evalign.reconstruction.configuration_e2vid import E2VIDConfig
    from modeling_evalign.reconstruction.configuration_reconstruction import ReconstructionAlignmentConfig
    from modeling_evalign.reconstruction.modeling_reconstruction import ReconstructionAlignmentModule

    event_tower = random_clip_vision("openai/clip-vit-large-patch14-336", seed=0, device=device)
    target_tower = random_clip_vision("openai/clip-vit-large-patch14", seed=1, device=device)
    adapter = LightweightAlignmentModule(LightweightAlignmentConfig(
        event_dim=1024, target_dim=1024, source_grid=[24, 24], target_grid=[16, 16], keep_cls_token=False,
    )).eval()
    recon = ReconstructionAlignmentModule(ReconstructionAlignmentConfig(
        reconstruction_config=E2VIDConfig.lightweight().to_dict())).eval()
    recon.set_clip_tower(event_tower)  # reconstructed frames go into the same 336 tower
    return event_tower, target_tower, adapter, recon


@torch.inference_mode()
def run_window(row: dict, events, towers, dtype: torch.dtype) -> tuple[dict, dict]:
    event_tower, target_tower, adapter, recon = towers
    st = Stages()
    ev_px, tg_px = st.run(
        "preprocess", lambda: (clip_preprocess(row["eventgpt_frames"], 336), clip_preprocess([row["rgb"]], 224))
    )
    tokens = st.run("event tower 5x336", lambda: _layer_tokens(event_tower, ev_px, -1, dtype))  # [5, 577, 1024]
    pooled = st.run("EventGPT pool", lambda: eventgpt_pool(tokens[None])[0])  # [582, 1024]
    spatial = pooled[None, len(row["eventgpt_frames"]):]  # [1, 577, 1024]
    with autocast_context(dtype, "cpu"):
        aligned = st.run("adapter 577->256", lambda: adapter(event_features=spatial).aligned_features)
    target = st.run("target tower 224", lambda: _layer_tokens(target_tower, tg_px, -2, dtype)[:, 1:])
    voxel = st.run("voxel grids", lambda: recon.event_steps(events.x, events.y, events.t, events.p,
                                                            events.height, events.width))
    with autocast_context(dtype, "cpu"):
        out = st.run("E2VID + 336 tower", lambda: recon(voxel[None]))
    shapes = {
        "event_tokens": list(tokens.shape), "eventgpt_pooled": list(pooled.shape),
        "adapter_out": list(aligned.shape[1:]), "target": list(target.shape[1:]),
        "reconstruction_tokens": list(out.token_features.shape[1:]), "recurrent_steps": int(voxel.shape[0]),
    }
    if shapes["adapter_out"] != shapes["target"]:
        raise RuntimeError(f"adapter output {shapes['adapter_out']} != target {shapes['target']}")
    return st.ms, shapes


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--windows", type=int, default=2)
    ap.add_argument("--duration", default="500ms")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    ap.add_argument("--data-dir", default=None, help="a DSEC-layout tree (default: write a synthetic one)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tmp = None
    if args.data_dir is None:
        from modeling_evalign.events.synthetic_dsec import write_synthetic_dsec

        tmp = tempfile.TemporaryDirectory(prefix="evalign-full-size-")
        args.data_dir = tmp.name
        seconds = 0.5 + args.windows * 0.5
        write_synthetic_dsec(args.data_dir, sequences=1, seconds=seconds, seed=0, progress=False)
    rows = DsecWindows(args.data_dir, args.duration)
    n = min(args.windows, len(rows))
    t0 = time.perf_counter()
    towers = build()
    build_s = time.perf_counter() - t0
    rss_built = _status_kb("VmRSS") / 1024
    ev_px = torch.zeros(5, 3, 336, 336)
    with torch.inference_mode():
        flops = {
            "event tower 5x336": flops_of(lambda: towers[0](pixel_values=ev_px)),
            "target tower 224": flops_of(lambda: towers[1](pixel_values=torch.zeros(1, 3, 224, 224))),
            "E2VID step": flops_of(lambda: towers[3].reconstructor(torch.zeros(1, 5, rows.height, rows.width))),
        }
    rows[0]  # warm-up: first HDF5 open and imports are not a window's cost
    report = {"platform": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "build_s": build_s, "rss_after_build_mb": rss_built,
              "windows": n, "duration": args.duration, "by_dtype": {}}
    for name in args.dtypes:
        dtype = getattr(torch, name)
        rate = gemm_rate(dtype)
        per_window = []
        for i in range(n):
            reset_peak_rss()
            t0 = time.perf_counter()
            st = Stages()
            row = st.run("read + render", lambda i=i: rows[i])
            ms, shapes = run_window(row, rows.window_events(i), towers, dtype)
            per_window.append({"ms": {**st.ms, **ms}, "total_ms": (time.perf_counter() - t0) * 1e3,
                               "peak_rss_mb": peak_rss_mb(), "event_count": row["event_count"], **shapes})
            print(f"[{name}] window {i}: {per_window[-1]['total_ms'] / 1e3:.1f} s, "
                  f"peak RSS {per_window[-1]['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
        report["by_dtype"][name] = {"gemm_gflops": rate / 1e9, "windows": per_window}
        _print_table(name, per_window, flops, rate)
    rows.close()
    report["flops"] = flops
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if tmp is not None:
        tmp.cleanup()
    return report


def _print_table(name: str, per_window: list[dict], flops: dict, rate: float) -> None:
    first = per_window[0]
    print(f"\n{name}: {len(per_window)} window(s), {torch.get_num_threads()} threads, bare GEMM "
          f"{rate / 1e9:.1f} GFLOP/s; shapes: event {first['event_tokens']} -> pooled {first['eventgpt_pooled']}, "
          f"adapter {first['adapter_out']} = target {first['target']}, reconstruction "
          f"{first['reconstruction_tokens']} ({first['recurrent_steps']} E2VID steps)")
    print(f"| {'stage':<22} | {'ms/window':>10} | {'GFLOP':>7} | {'x GEMM':>7} |")
    print(f"|{'-' * 24}|{'-' * 12}|{'-' * 9}|{'-' * 9}|")
    steps = sum(w["recurrent_steps"] for w in per_window) / len(per_window)
    flops = {**flops, "E2VID + 336 tower": steps * flops["E2VID step"] + flops["event tower 5x336"] / 5}
    for stage in first["ms"]:
        ms = sum(w["ms"][stage] for w in per_window) / len(per_window)
        f = flops.get(stage)
        ratio = f"{ms / 1e3 / (f / rate):.2f}" if f else "-"
        gf = f"{f / 1e9:.0f}" if f else "-"
        print(f"| {stage:<22} | {ms:>10.1f} | {gf:>7} | {ratio:>7} |")
    total = sum(w["total_ms"] for w in per_window) / len(per_window)
    peak = max(w["peak_rss_mb"] for w in per_window)
    print(f"| {'total per window':<22} | {total:>10.1f} | {'':>7} | {'':>7} |")
    print(f"peak RSS per window: {peak:.0f} MB (max over windows; towers included)")


if __name__ == "__main__":
    main()
