"""Training throughput (samples/s) of one process vs two (``accelerate launch``, CPU/gloo) in the same run.

Workloads: a feature-level contrastive step (ContrastiveAlignmentModule, 1024 -> 1024, global batch 256) and a
LoRA step of the CEIA image model on a tiny CLIP (64 px, patch 8, width 128, 4 layers, global batch 32).
Each step = forward + backward (+ gradient all-reduce and feature all-gather with 2 processes) + AdamW step.
Every process runs ONE thread (OMP_NUM_THREADS=1): on a shared, oversubscribed CPU several threads per process
spin against each other, which made the 1-process numbers meaningless. The ratio is therefore the scaling from
one to two processes of one thread each (ideal: 2.0 on two free cores).

    python benchmarks/bench_training.py [--steps 10]
    python benchmarks/bench_training.py --launch_check   # README commands, 1 vs 2 processes, every strategy

``--launch_check`` runs ``train_accelerate.py`` itself: the README's 2-process command (``ACCELERATE_USE_CPU=1
accelerate launch --multi_gpu --num_processes 2 ...``) for lightweight and contrastive (generated features)
and contrastive_image (tiny synthetic DSEC tree, tiny CLIP), each against one process with the same global
batch, and the 2-machine loopback shape; it prints steps per epoch and the largest weight difference.
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

        model = ContrastiveImageAlignmentModel(ContrastiveImageAlignmentConfig(clip_model_id=clip_dir))
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


LAUNCH = ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]


def _train_accelerate(flags: list[str], out: Path, launch: list[str] | None, env: dict) -> float:
    script = str(REPO / "train_accelerate.py")
    accelerate = [str(Path(sys.executable).parent / "accelerate"), "launch"]
    cmd = [sys.executable, script] if launch is None else [*accelerate, *launch, script]
    start = time.perf_counter()
    proc = subprocess.run([*cmd, *flags, "--output_dir", str(out)], env=env, capture_output=True, text=True,
                          timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def _final(out: Path) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    final = next(out.rglob("final"))
    return json.loads((final / "training_info.json").read_text()), load_file(str(final / "model.safetensors"))


def launch_check(tmp: Path) -> None:
    """The README's launch shapes through train_accelerate.py, each against one process (same global batch)."""
    import socket

    import torch
    from transformers import CLIPModel

    from modeling_evalign.data.alignment_dataset import AlignmentDataset
    from modeling_evalign.events.synthetic_dsec import write_synthetic_dsec
    from modeling_evalign.features.tiny_models import tiny_clip_config

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "ACCELERATE_USE_CPU": "1",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp / "hf")}
    g = torch.Generator().manual_seed(0)
    e = torch.randn(160, 32, generator=g)
    t = e @ torch.randn(32, 16, generator=g) + 0.1 * torch.randn(160, 16, generator=g)
    AlignmentDataset(e[:128], t[:128]).save_to_directory(tmp / "f" / "train")
    AlignmentDataset(e[128:], t[128:]).save_to_directory(tmp / "f" / "validation")
    write_synthetic_dsec(tmp / "dsec", sequences=2, seconds=3.0, seed=3, image_size=(96, 72), sensor_size=(64, 48),
                         progress=False)
    CLIPModel(tiny_clip_config()).save_pretrained(tmp / "clip")
    features = ["--train_dir", str(tmp / "f" / "train"), "--val_dir", str(tmp / "f" / "validation"), "--num_epochs", "2"]
    image = ["--dsec_data_dir", str(tmp / "dsec"), "--durations", "500ms", "--dsec_cache_dir", str(tmp / "cache"),
             "--clip_model", str(tmp / "clip"), "--lora_r", "2", "--num_epochs", "2", "--batch_size", "4"]
    runs = [("lightweight", ["--strategy", "lightweight", *features]),
            ("contrastive", ["--strategy", "contrastive", *features]),
            ("contrastive_image", ["--strategy", "contrastive_image", *image])]
    two_procs = [*LAUNCH, "--num_processes", "2", "--num_machines", "1", "--main_process_port", "0"]
    print("| strategy | launch | processes | steps/epoch | per-process batch | max abs weight diff vs 1 process | "
          "wall s | wall s 1 process |")
    print("|---|---|---|---|---|---|---|---|")
    for name, flags in runs:
        wall_one = _train_accelerate(flags, tmp / name / "one", None, env)
        info_one, w_one = _final(tmp / name / "one")
        shapes = [("2 processes", [two_procs])]
        if name == "lightweight":
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = str(s.getsockname()[1])
            nodes = [[*LAUNCH, "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(r),
                      "--main_process_ip", "127.0.0.1", "--main_process_port", port] for r in (0, 1)]
            shapes.append(("2 machines (loopback)", nodes))
        for label, launches in shapes:
            out = tmp / name / label.split()[1]
            start = time.perf_counter()
            if len(launches) == 1:
                _train_accelerate(flags, out, launches[0], env)
            else:  # one launcher per machine, started together
                script = str(REPO / "train_accelerate.py")
                accelerate = [str(Path(sys.executable).parent / "accelerate"), "launch"]
                procs = [subprocess.Popen([*accelerate, *lc, script, *flags, "--output_dir", str(out)], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                         for lc in launches]
                errors = [p.communicate(timeout=900)[1] for p in procs]
                if any(p.returncode for p in procs):
                    raise RuntimeError(f"{label} failed:\n{errors[0][-2000:]}\n{errors[1][-2000:]}")
            wall = time.perf_counter() - start
            info, w = _final(out)
            diff = max(float((w[k] - w_one[k]).abs().max()) for k in w_one)
            print(f"| {name} | {label} | {info['num_processes']} | {info['steps_per_epoch']} "
                  f"(1 process: {info_one['steps_per_epoch']}) | {info['per_process_batch_size']} | {diff:.1e} | "
                  f"{wall:.1f} | {wall_one:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--worker", choices=["feature", "lora"])
    parser.add_argument("--clip_dir", default="")
    parser.add_argument("--launch_check", action="store_true")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.warmup, args.clip_dir)
        return
    if args.launch_check:
        with tempfile.TemporaryDirectory() as tmp:
            launch_check(Path(tmp))
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
