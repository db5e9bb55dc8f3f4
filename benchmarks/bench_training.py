"""Training throughput (samples/s) of one process vs two (``accelerate launch``, CPU/gloo) in the same run.

Workloads: a feature-level contrastive step (ContrastiveAlignmentModule, 1024 -> 1024, global batch 256) and a
LoRA step of the CEIA image model on a tiny CLIP (64 px, patch 8, width 128, 4 layers, global batch 32).
Each step = forward + backward (+ gradient all-reduce and feature all-gather with 2 processes) + AdamW step.
Every process runs ONE thread (OMP_NUM_THREADS=1): on a shared, oversubscribed CPU several threads per process
spin against each other, which made the 1-process numbers meaningless. The ratio is therefore the scaling from
one to two processes of one thread each (ideal: 2.0 on two free cores).

    python benchmarks/bench_training.py [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def worker(kind: str, steps: int, warmup: int, clip_dir: str) -> None:
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    torch.set_num_threads(1)
    accelerator = Accelerator(cpu=True)
    set_seed(0)
    world = accelerator.num_processes
    if kind == "feature":
        from modeling_evalign.contrastive.configuration_contrastive import ContrastiveAlignmentConfig
        from modeling_evalign.contrastive.modeling_contrastive import ContrastiveAlignmentModule

        model = ContrastiveAlignmentModule(ContrastiveAlignmentConfig(event_dim=1024, target_dim=1024))
        global_batch = 256
        local = global_batch // world
        inputs = {"event_features": torch.randn(local, 1024), "target_features": torch.randn(local, 1024)}
    else:
        from modeling_evalign.contrastive.configuration_contrastive_image import (
            ContrastiveImageAlignmentConfig,
        )
        from modeling_evalign.contrastive.modeling_contrastive_image import ContrastiveImageAlignmentModel

        model = ContrastiveImageAlignmentModel(ContrastiveImageAlignmentConfig(clip_model_name_or_path=clip_dir))
        global_batch = 32
        local = global_batch // world
        inputs = {"event_pixel_values": torch.randn(local, 3, 64, 64), "pixel_values": torch.randn(local, 3, 64, 64)}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()

    def step():
        loss = model(**inputs).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    accelerator.wait_for_everyone()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    accelerator.wait_for_everyone()
    elapsed = time.perf_counter() - start
    if accelerator.is_main_process:
        print("RESULT " + json.dumps({"kind": kind, "processes": world, "samples_per_s": steps * global_batch / elapsed,
                                      "step_ms": 1000 * elapsed / steps}), flush=True)


def _run(kind: str, processes: int, steps: int, clip_dir: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(REPO)}
    script = [str(Path(__file__).resolve()), "--worker", kind, "--steps", str(steps), "--clip_dir", clip_dir]
    if processes == 1:
        cmd = [sys.executable, *script]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
               *script]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} with {processes} process(es) failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--worker", choices=["feature", "lora"])
    parser.add_argument("--clip_dir", default="")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.warmup, args.clip_dir)
        return

    from transformers import CLIPModel

    from modeling_evalign.features.tiny_models import tiny_clip_config

    with tempfile.TemporaryDirectory() as tmp:
        clip_dir = str(Path(tmp) / "clip")
        CLIPModel(tiny_clip_config(image_size=64, patch_size=8, hidden_size=128, num_layers=4)).save_pretrained(clip_dir)
        rows = []
        for kind in ("feature", "lora"):
            one = _run(kind, 1, args.steps, clip_dir)
            two = _run(kind, 2, args.steps, clip_dir)
            rows.append((kind, one, two))
    print("| workload | 1 process samples/s | 2 processes samples/s | ratio 2p/1p | step ms 1p | step ms 2p |")
    print("|---|---|---|---|---|---|")
    for kind, one, two in rows:
        ratio = two["samples_per_s"] / one["samples_per_s"]
        print(f"| {kind} | {one['samples_per_s']:.1f} | {two['samples_per_s']:.1f} | {ratio:.2f} | "
              f"{one['step_ms']:.1f} | {two['step_ms']:.1f} |")


if __name__ == "__main__":
    main()
