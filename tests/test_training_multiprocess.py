"""The README's multi-process command, run verbatim through the real ``accelerate launch``, trains ONE 2-process
gloo group that matches one process; the 2-machine launch shape works over loopback."""

from __future__ import annotations

import json
import os
import shlex
import socket
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

# The README's "Training with Accelerate" command (D: feature root, O: output directory). Keep them in step.
README_TWO_CPU_PROCESSES = (
    "ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --main_process_port 0 "
    "--mixed_precision no --dynamo_backend no train_accelerate.py --strategy contrastive "
    "--train_dir D/train --val_dir D/validation --output_dir O --num_epochs 2"
)
# The README's 2-machine recipe, both "machines" on this one (loopback); MACHINE: 0 or 1, PORT: a free port.
README_TWO_MACHINES = (
    "ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_machines 2 --num_processes 2 --machine_rank MACHINE "
    "--main_process_ip 127.0.0.1 --main_process_port PORT --mixed_precision no --dynamo_backend no "
    "train_accelerate.py --strategy lightweight --train_dir D/train --val_dir D/validation --output_dir O "
    "--num_epochs 2 --batch_size 16 --learning_rate 0.01 --checkpointing_steps 4"
)
N_TRAIN = 64


def _command(text: str, **values: str) -> tuple[list[str], dict[str, str]]:
    """argv and environment of a README shell line: ``VAR=value`` prefixes go to the environment, the
    ``accelerate`` console script of this interpreter runs, ``train_accelerate.py`` is the repository's."""
    words = shlex.split(text)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    while "=" in words[0]:
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    script = Path(sys.executable).parent / "accelerate"
    launcher = [str(script)] if script.is_file() else [sys.executable, "-m", "accelerate.commands.accelerate_cli"]
    argv = []
    for word in words[1:]:
        if word.startswith("D/"):
            word = values["D"] + word[1:]
        word = values.get(word, word)
        argv.append(str(REPO / word) if word == "train_accelerate.py" else word)
    return launcher + argv, env


def _data(tmp_path: Path) -> Path:
    root = tmp_path / "features"
    train_dir, val_dir = _feature_dirs(root, n_train=N_TRAIN, n_val=16)
    val_dir.rename(root / "validation")
    return root


def _weights(final: Path) -> dict[str, torch.Tensor]:
    return load_file(str(final / "model.safetensors"))


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_readme_command_trains_one_two_process_group(tmp_path):
    root, out = _data(tmp_path), tmp_path / "two"
    argv, env = _command(README_TWO_CPU_PROCESSES, D=str(root), O=str(out))
    proc = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((out / "final" / "training_info.json").read_text())

    # one process with the same global batch (default 32): the same steps, losses and weights
    common = dict(strategy="contrastive", train_dir=str(root / "train"), val_dir=str(root / "validation"), cpu=True)
    one = train(TrainConfig(**common, num_epochs=2, output_dir=str(tmp_path / "one")))
    assert info["num_processes"] == 2 and info["global_batch_size"] == 32 and info["per_process_batch_size"] == 16
    assert info["steps_per_epoch"] == one.steps_per_epoch == N_TRAIN // 32 and info["global_steps"] == 4
    # the bug of issue 13 (each process alone on the whole set with its own batch) takes twice the steps per epoch
    alone = train(TrainConfig(**common, num_epochs=1, batch_size=16, output_dir=str(tmp_path / "alone")))
    assert alone.steps_per_epoch == 2 * info["steps_per_epoch"]
    # each process held 16 of the 32 rows; the loss gathered the other process's negatives
    assert info["losses"] == pytest.approx(one.losses, rel=1e-5, abs=1e-6)
    _assert_same_weights(_weights(tmp_path / "one" / "final"), _weights(out / "final"))
    diff = max(float((_weights(tmp_path / "one" / "final")[k] - w).abs().max()) for k, w in _weights(out / "final").items())
    print(f"max |w_2proc - w_1proc| = {diff:.2e}")
    for key in ("e2t/R@1", "mse", "cosine"):
        assert info["final_metrics"][key] == pytest.approx(one.val_metrics[-1][key], rel=1e-5)
    # only the main process wrote final/ and reported; no half-written directories left by the other
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    assert proc.stdout.count(": finished at step 4") == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_machines_over_loopback(tmp_path):
    """The multi-node recipe (one launch per machine, rank 0's address and port) with one process per machine."""
    root, out = _data(tmp_path), tmp_path / "nodes"
    port = str(_free_port())
    procs = []
    for machine in ("0", "1"):
        argv, env = _command(README_TWO_MACHINES, D=str(root), O=str(out), MACHINE=machine, PORT=port)
        procs.append(subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    try:
        outputs = [p.communicate(timeout=400) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    info = json.loads((out / "final" / "training_info.json").read_text())
    assert info["num_processes"] == 2 and info["per_process_batch_size"] == 8 and info["global_steps"] == 8
    # one RNG state per process in every checkpoint (written by each machine), the weights by the main one
    assert sorted(p.name for p in (out / "checkpoint-8").glob("rng_state_*.pt")) == ["rng_state_0.pt", "rng_state_1.pt"]
    common = dict(strategy="lightweight", train_dir=str(root / "train"), val_dir=str(root / "validation"),
                  num_epochs=2, batch_size=16, learning_rate=0.01, cpu=True)
    one = train(TrainConfig(**common, output_dir=str(tmp_path / "one")))
    assert info["losses"] == pytest.approx(one.losses, rel=1e-5, abs=1e-6)
    _assert_same_weights(_weights(tmp_path / "one" / "final"), _weights(out / "final"))
    # a 2-process checkpoint holds one RNG state per process: resuming it with 1 process is refused up front
    with pytest.raises(ValueError, match="2 process"):
        train(TrainConfig(**common, output_dir=str(out), resume_from_checkpoint=str(out / "checkpoint-4")))


def _readme_shell_lines() -> list[str]:
    """The README's bash lines with ``\\`` continuations joined and whitespace collapsed."""
    text = (REPO / "README.md").read_text(encoding="utf-8").replace("\\\n", " ")
    return [" ".join(line.split()) for line in text.splitlines()]


def test_readme_shows_the_tested_two_process_command():
    # the test above runs README_TWO_CPU_PROCESSES; this keeps the README from drifting away from it
    assert README_TWO_CPU_PROCESSES in _readme_shell_lines()


def test_readme_two_machine_recipe_is_the_tested_one():
    tested = shlex.split(README_TWO_MACHINES)
    lines = [shlex.split(line) for line in _readme_shell_lines() if "--num_machines 2" in line]
    assert lines, "README has no 2-machine recipe"
    shown = lines[0]
    placeholders = {"MACHINE": "0", "127.0.0.1": "10.0.0.1", "PORT": "29500"}
    expected = [placeholders.get(word, word) for word in tested]
    # the README line is the tested one up to the test's extra tuning flags at the end
    assert shown == expected[: len(shown)], (shown, expected)
    assert shown[-2:] == ["--output_dir", "O"]
