"""Two CPU processes through the real ``accelerate launch`` (gloo) train exactly like one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modeling_evalign.training.config import TrainConfig
from modeling_evalign.training.loop import train

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from test_training import _feature_dirs  # noqa: E402


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_equal_one_process(tmp_path):
    train_dir, val_dir = _feature_dirs(tmp_path)
    flags = ["--strategy", "contrastive", "--train_dir", str(train_dir), "--val_dir", str(val_dir),
             "--num_epochs", "2", "--batch_size", "16", "--learning_rate", "0.01", "--cpu",
             "--checkpointing_steps", "4"]
    # DESIGN.md: `--cpu --num_processes 2` silently runs ONE process; --multi_gpu + ACCELERATE_USE_CPU gives two.
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([*launch, str(REPO / "train_accelerate.py"), *flags, "--output_dir", str(tmp_path / "two")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    one = train(TrainConfig(strategy="contrastive", train_dir=str(train_dir), val_dir=str(val_dir), num_epochs=2,
                            batch_size=16, learning_rate=0.01, cpu=True, checkpointing_steps=4,
                            output_dir=str(tmp_path / "one")))
    info = json.loads((tmp_path / "two" / "final" / "training_info.json").read_text())
    assert info["num_processes"] == 2 and one.global_step == info["global_steps"] == 6
    # each process saw 8 of the 16 samples; the loss gathered the other process's negatives (with 8 local
    # negatives only, the per-step losses would be far from the 1-process values)
    assert info["losses"] == pytest.approx(one.losses, rel=1e-5, abs=1e-6)
    a = load_file(str(tmp_path / "one" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)
    ranks = load_file(str(tmp_path / "two" / "checkpoint-4" / "model.safetensors"))  # checkpoint of the 2-proc run
    assert ranks.keys() == a.keys()
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoint-4").glob("rng_state_*.pt")) == [
        "rng_state_0.pt", "rng_state_1.pt"]
    for key in ("e2t/R@1", "mse", "cosine"):
        assert info["final_metrics"][key] == pytest.approx(one.val_metrics[-1][key], rel=1e-5)
    # a 2-process checkpoint holds one RNG state per process: resuming it with 1 process is refused up front
    with pytest.raises(ValueError, match="2 process"):
        train(TrainConfig(strategy="contrastive", train_dir=str(train_dir), val_dir=str(val_dir), num_epochs=2,
                          batch_size=16, cpu=True, output_dir=str(tmp_path / "two"), resume_from_checkpoint="latest"))
