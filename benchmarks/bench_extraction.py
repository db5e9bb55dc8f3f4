"""Feature-extraction throughput: 1 vs 2 processes (accelerate launch), fp32 vs bf16, same run, same data.

    python benchmarks/bench_extraction.py [--windows 16] [--model b32|l14-336] [--num-workers 0]

Writes a synthetic DSEC tree at the real sizes (640x480 events, 1440x1080 RGB, 200 ms windows), saves a
random-weight CLIP vision tower to a temporary folder (``b32``: ViT-B/32 shape at 224, hidden 768, 12 layers,
so a CPU run takes minutes; ``l14-336``: the real EventGPT tower, for GPU machines) and runs
``dataset_scripts/extract_features.py`` (event tokens + target patch tokens) once per setting: 1 process
with torch's default threads, 1 process with one thread, 2 processes (``accelerate launch``, one thread
each). windows/s is what the script prints: encoding time between the processes' barriers, model loading
excluded. The baseline is the 1-process fp32 run; every other output is checked byte for byte against the
1-process output of the same dtype. (On one GPU, run only the 1-process rows: 2 processes need 2 GPUs.)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "dataset_scripts" / "extract_features.py"
B32 = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, patch_size=32,
           image_size=224, projection_dim=512, hidden_act="quick_gelu")


def save_tower(kind: str, path: Path) -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from modeling_evalign.features.clip_configs import clip_vision_config

    cfg = CLIPVisionConfig(**B32) if kind == "b32" else clip_vision_config("openai/clip-vit-large-patch14-336")
    torch.manual_seed(0)
    CLIPVisionModel(cfg).save_pretrained(path)


def run(processes: int, dtype: str, flags: list[str], out: Path, threads: int | None = None) -> float:
    launch = [sys.executable]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    if processes > 1:
        launch += ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", "0"]
        if not torch.cuda.is_available():
            env["ACCELERATE_USE_CPU"] = "1"
    proc = subprocess.run([*launch, str(SCRIPT), *flags, "--dtype", dtype, "--out", str(out)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    match = re.search(r"^total: (\d+) windows in ([\d.]+) s: ([\d.]+) windows/s", proc.stdout, re.M)
    if match is None:
        raise RuntimeError(f"no windows/s line in the output:\n{proc.stdout[-2000:]}")
    return float(match.group(3))


def same_files(a: Path, b: Path) -> bool:
    names = ("event_features.safetensors", "target_features.safetensors", "metadata.json")
    return all((a / "train" / n).read_bytes() == (b / "train" / n).read_bytes() for n in names)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--model", default="b32", choices=["b32", "l14-336"])
    ap.add_argument("--num-workers", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=4)
    args = ap.parse_args(argv)
    from modeling_evalign.events.synthetic_dsec import write_synthetic_dsec

    rows = []
    with tempfile.TemporaryDirectory(prefix="evalign-bench-extract-") as tmp:
        tmp = Path(tmp)
        write_synthetic_dsec(tmp / "tree", sequences=1, seconds=0.2 * args.windows + 0.3, seed=0, progress=False)
        save_tower(args.model, tmp / "tower")
        flags = ["--data-dir", str(tmp / "tree"), "--duration", "200ms", "--val-fraction", "0",
                 "--test-fraction", "0", "--event-model", str(tmp / "tower"), "--event-pooling", "tokens",
                 "--target-tokens", "patch", "--batch-size", str(args.batch_size), "--shard-size",
                 str(2 * args.batch_size), "--num-workers", str(args.num_workers)]
        for dtype in ("float32", "bfloat16"):
            # 1 process with torch's default threads, 1 process with 1 thread, 2 processes (1 thread each:
            # torch.distributed.run sets OMP_NUM_THREADS=1)
            for procs, threads in ((1, None), (1, 1), (2, None)):
                out = tmp / f"out_{procs}_{threads}_{dtype}"
                wps = run(procs, dtype, flags, out, threads)
                same = same_files(out, tmp / f"out_1_None_{dtype}") if (procs, threads) != (1, None) else None
                rows.append({"processes": procs, "threads": threads or ("1" if procs > 1 else "default"),
                             "dtype": dtype, "windows_per_s": wps, "identical_to_1": same})
                print(f"{procs} process(es), threads {threads}, {dtype}: {wps:.3f} windows/s", file=sys.stderr,
                      flush=True)
    base = rows[0]["windows_per_s"]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"\n{args.windows} windows of 200 ms, 640x480 events, {args.model} tower, {device}, "
          f"batch {args.batch_size}, {args.num_workers} workers per process")
    print("| processes | threads each | dtype | windows/s | x 1-process fp32 | files identical to 1 process |")
    print("|---:|---|---|---:|---:|---|")
    for r in rows:
        same = "-" if r["identical_to_1"] is None else ("yes" if r["identical_to_1"] else "NO")
        print(f"| {r['processes']} | {r['threads']} | {r['dtype']} | {r['windows_per_s']:.3f} | "
              f"{r['windows_per_s'] / base:.2f} | {same} |")
    return rows


if __name__ == "__main__":
    main()
