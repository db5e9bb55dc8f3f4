"""Accelerate training loop: exact resume, checkpoint limit/atomicity, metrics, outputs, input errors, SIGTERM."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modeling_evalign.data.alignment_dataset import AlignmentDataset
from modeling_evalign.training.checkpointing import (
    LATEST_NAME,
    STATE_NAME,
    TrainerState,
    find_latest_checkpoint,
    list_checkpoints,
)
from modeling_evalign.training.config import DSEC_DURATIONS, TrainConfig, parse_args
from modeling_evalign.training.data import ShardedBatchSampler, shard_indices
from modeling_evalign.training.loop import train

REPO = Path(__file__).resolve().parents[1]


def _feature_dirs(root: Path, n_train: int = 48, n_val: int = 16, event_dim: int = 8, target_dim: int = 6):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(event_dim, target_dim, generator=g)
    e = torch.randn(n_train + n_val, event_dim, generator=g)
    t = e @ w + 0.1 * torch.randn(n_train + n_val, target_dim, generator=g)
    AlignmentDataset(e[:n_train], t[:n_train]).save_to_directory(root / "train")
    AlignmentDataset(e[n_train:], t[n_train:]).save_to_directory(root / "val")
    return root / "train", root / "val"


def _config(tmp_path: Path, out: str = "out", **kw) -> TrainConfig:
    train_dir, val_dir = _feature_dirs(tmp_path) if not (tmp_path / "train").exists() else (
        tmp_path / "train", tmp_path / "val")
    base = dict(strategy="lightweight", train_dir=str(train_dir), val_dir=str(val_dir), output_dir=str(tmp_path / out),
                num_epochs=3, batch_size=16, learning_rate=1e-2, checkpointing_steps=100, cpu=True, seed=3)
    base.update(kw)
    return TrainConfig(**base)


# dropout makes the run depend on the restored RNG state, not only on weights and data order
STRATEGY_KW = {
    "lightweight": dict(strategy="lightweight", model_config=["adapter_type=\"mlp\"", "hidden_dim=16", "dropout=0.3"]),
    "contrastive": dict(strategy="contrastive"),
}


@pytest.mark.parametrize("strategy", sorted(STRATEGY_KW))
def test_resume_equals_uninterrupted(tmp_path, strategy):
    full = train(_config(tmp_path, "full", **STRATEGY_KW[strategy]))
    assert full.global_step == 9 and not full.interrupted
    # "killed" mid-epoch 1 (step 4 of 9), then resumed from the latest checkpoint in the same output dir
    part = train(_config(tmp_path, "part", stop_at_step=4, **STRATEGY_KW[strategy]))
    assert part.interrupted and part.global_step == 4 and part.checkpoint.name == "checkpoint-4"
    assert not (tmp_path / "part" / "final").exists()
    resumed = train(_config(tmp_path, "part", resume_from_checkpoint="latest", **STRATEGY_KW[strategy]))
    assert resumed.global_step == 9
    assert resumed.losses == full.losses  # bit-identical: same weights, optimizer, schedule, data order, RNG
    assert resumed.val_metrics == full.val_metrics
    a = load_file(str(tmp_path / "full" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    info = json.loads((tmp_path / "part" / "final" / "training_info.json").read_text())
    assert info["resumed_from"].endswith("checkpoint-4") and info["losses"] == full.losses
    # and the run did learn something (the comparison is not between two untrained models)
    assert full.losses[-1] < full.losses[0]


def test_checkpoint_limit_and_pointer(tmp_path):
    result = train(_config(tmp_path, checkpointing_steps=2, checkpoints_total_limit=2))
    out = Path(result.output_dir)
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-6", "checkpoint-8"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no partial/trash directories left
    assert (out / LATEST_NAME).read_text().strip() == "checkpoint-8"
    state = TrainerState.load(out / "checkpoint-8")
    assert state.global_step == 8 and state.losses == result.losses[:8] and state.epoch == 2 and state.step_in_epoch == 2


def test_half_written_checkpoint_is_ignored(tmp_path):
    cfg = _config(tmp_path, stop_at_step=3, checkpointing_steps=1)
    first = train(cfg)
    out = Path(first.output_dir)
    # a crash while writing checkpoint-4: the directory exists with weights but without trainer_state.json,
    # the pointer was (wrongly) moved to it, and a partial temp dir is lying around
    (out / "checkpoint-4").mkdir()
    (out / "checkpoint-4" / "model.safetensors").write_bytes((out / "checkpoint-3" / "model.safetensors").read_bytes())
    (out / ".checkpoint-5.partial").mkdir()
    (out / LATEST_NAME).write_text("checkpoint-4\n")
    assert find_latest_checkpoint(out).name == "checkpoint-3"
    resumed = train(_config(tmp_path, resume_from_checkpoint="latest", checkpointing_steps=1))
    full = train(_config(tmp_path, "full"))
    assert resumed.losses == full.losses


def test_validation_metrics_match_brute_force(tmp_path):
    result = train(_config(tmp_path, strategy="contrastive", num_epochs=2))
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tmp_path / "out" / "final").eval()
    val = AlignmentDataset.from_directory(tmp_path / "val")
    with torch.no_grad():
        aligned = model(event_features=val.event_features).aligned_features.double()
    target = val.target_features.double()
    cos = torch.nn.functional.normalize(aligned, dim=-1) @ torch.nn.functional.normalize(target, dim=-1).T
    hits = sum(int(sum(float(cos[i, j]) >= float(cos[i, i]) for j in range(len(val)) if j != i) == 0)
               for i in range(len(val)))
    metrics = result.val_metrics[-1]
    assert metrics["e2t/R@1"] == pytest.approx(hits / len(val))
    assert metrics["mse"] == pytest.approx(float(((aligned - target) ** 2).mean()), rel=1e-5)
    info = json.loads((tmp_path / "out" / "final" / "training_info.json").read_text())
    assert info["counts"] == {"train": 48, "val": 16}
    assert info["strategy"] == "contrastive" and info["global_steps"] == 6
    assert info["final_metrics"] == {k: v for k, v in metrics.items() if k != "epoch"}
    assert len(info["history"]) == 2 and info["history"][1]["train_loss"] == pytest.approx(sum(result.losses[3:]) / 3)
    assert {"torch", "transformers", "accelerate"} <= set(info["versions"])
    assert TrainConfig.load(tmp_path / "out") == _config(tmp_path, strategy="contrastive", num_epochs=2)


def test_tensorboard_logging(tmp_path):
    pytest.importorskip("tensorboard")
    train(_config(tmp_path, num_epochs=1, log_with="tensorboard"))
    assert list((tmp_path / "out").rglob("events.out.tfevents.*"))


def test_sharded_batches_cover_the_global_batch():
    one = list(ShardedBatchSampler(50, 12, 0, 1, seed=7, epoch=2))
    two = [ShardedBatchSampler(50, 12, r, 2, seed=7, epoch=2) for r in range(2)]
    assert len(one) == 4  # 50 // 12, last partial batch dropped
    for step, (a, b) in enumerate(zip(*two)):
        assert a + b == one[step] and len(a) == len(b) == 6
    assert list(ShardedBatchSampler(50, 12, 0, 1, seed=7, epoch=2, start_batch=3)) == one[3:]
    assert one != list(ShardedBatchSampler(50, 12, 0, 1, seed=7, epoch=3))  # reshuffled every epoch
    shards = [shard_indices(10, r, 3) for r in range(3)]
    assert [s[1] for s in shards] == [4, 4, 2] and all(len(s[0]) == 4 for s in shards)
    assert sum((s[0][: s[1]] for s in shards), []) == list(range(10))


def test_bad_input_errors_before_training(tmp_path):
    train_dir, val_dir = _feature_dirs(tmp_path)
    with pytest.raises(ValueError, match="200ms.*20s"):
        parse_args(["--durations", "3s", "--train_dir", str(train_dir), "--output_dir", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="strategy.*lightweight"):
        TrainConfig(strategy="magic", train_dir=str(train_dir))
    with pytest.raises(ValueError, match="exactly one data source"):
        TrainConfig(strategy="lightweight")
    with pytest.raises(FileNotFoundError, match="nope"):
        train(_config(tmp_path, train_dir=str(tmp_path / "nope")))
    with pytest.raises(ValueError, match="larger than the training data"):
        train(_config(tmp_path, batch_size=64))
    with pytest.raises(ValueError, match="divisible"):
        ShardedBatchSampler(50, 5, 0, 2, seed=0, epoch=0)
    with pytest.raises(ValueError, match="model_config"):
        TrainConfig(train_dir=str(train_dir), model_config=["no_equals_sign"])
    # a checkpoint written by another strategy
    train(_config(tmp_path, "lw", stop_at_step=1))
    with pytest.raises(ValueError, match="strategy='lightweight'"):
        train(_config(tmp_path, "lw", strategy="contrastive", resume_from_checkpoint="latest"))
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        train(_config(tmp_path, "lw", resume_from_checkpoint=str(tmp_path / "val")))
    assert not (tmp_path / "o").exists() and not (tmp_path / "out").exists()  # nothing started
    assert set(DSEC_DURATIONS) == {"200ms", "500ms", "1s", "2s", "4s", "5s", "10s", "20s"}


def test_durations_run_one_training_each(tmp_path):
    for d in ("200ms", "1s"):
        _feature_dirs(tmp_path / d)
    from train_accelerate import main

    argv = ["--strategy", "lightweight", "--durations", "200ms", "1s", "--train_dir", str(tmp_path / "{duration}/train"),
            "--val_dir", str(tmp_path / "{duration}/val"), "--output_dir", str(tmp_path / "runs"), "--num_epochs", "1",
            "--batch_size", "16", "--cpu"]
    assert main(argv) == 0
    for d in ("200ms", "1s"):
        info = json.loads((tmp_path / "runs" / d / "final" / "training_info.json").read_text())
        assert info["durations"] == [d] and info["data"]["train_dir"].endswith(f"{d}/train")
        assert TrainConfig.load(tmp_path / "runs" / d).durations == [d]


@pytest.mark.slow
@pytest.mark.parametrize("script", ["train_accelerate.py", "run_egpt_dsec_alignment.py"])
def test_sigterm_saves_checkpoint_and_resumes(tmp_path, script):
    train_dir, val_dir = _feature_dirs(tmp_path)
    out = tmp_path / "sig"
    argv = [sys.executable, str(REPO / script), "--strategy", "lightweight", "--train_dir", str(train_dir),
            "--val_dir", str(val_dir), "--output_dir", str(out), "--num_epochs", "2000", "--batch_size", "16",
            "--checkpointing_steps", "5", "--checkpoints_total_limit", "2", "--cpu"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        for line in proc.stdout:
            if "checkpoint saved" in line:
                break
            assert time.monotonic() < deadline, "no checkpoint marker"
        proc.send_signal(signal.SIGTERM)
        rest = proc.stdout.read()
        assert proc.wait(timeout=60) == 143  # non-zero: a scheduler must not take it for a finished run
    finally:
        proc.kill()
    assert "interrupted (resumable)" in rest
    latest = find_latest_checkpoint(out)
    stopped = TrainerState.load(latest)
    assert 5 <= stopped.global_step < 6000 and (latest / STATE_NAME).is_file()
    saved = TrainConfig.load(out)
    assert saved.train_dir == str(train_dir) and saved.num_epochs == 2000  # train_config.json of the killed run
    resumed = train(dataclasses.replace(saved, resume_from_checkpoint="latest", stop_at_step=stopped.global_step + 2))
    assert resumed.global_step == stopped.global_step + 2
    assert resumed.losses[: stopped.global_step] == stopped.losses


@pytest.mark.slow
def test_dsec_image_pairs_end_to_end(tmp_path_factory, tmp_path):
    """run_egpt_dsec_alignment on a tiny synthetic DSEC tree: builder -> CEIA histogram/RGB pairs -> LoRA run."""
    from dsec_tree import synthetic_tree
    from transformers import CLIPModel

    from modeling_evalign.features.tiny_models import tiny_clip_config
    from run_egpt_dsec_alignment import main

    tree = synthetic_tree(tmp_path_factory)
    CLIPModel(tiny_clip_config()).save_pretrained(tmp_path / "clip")
    argv = ["--strategy", "contrastive_image", "--dsec_data_dir", str(tree), "--durations", "500ms",
            "--dsec_cache_dir", str(tmp_path / "cache"), "--clip_model", str(tmp_path / "clip"), "--lora_r", "2",
            "--num_epochs", "1", "--batch_size", "4", "--output_dir", str(tmp_path / "runs"), "--cpu"]
    assert main(argv) == 0
    info = json.loads((tmp_path / "runs" / "500ms" / "final" / "training_info.json").read_text())
    # 2 sequences x 3 s of 500 ms windows (minus the tails the window rule drops), split between train and val
    assert info["data"]["type"] == "dsec" and info["durations"] == ["500ms"]
    total = info["counts"]["train"] + info["counts"]["val"]
    assert 8 <= total <= 12 and info["global_steps"] == info["counts"]["train"] // 4
    assert (tmp_path / "runs" / "500ms" / "final" / "adapter" / "adapter_config.json").is_file()
    # feature strategies on DSEC: features are extracted with the frozen CLIP first (once), then trained on
    # (train_accelerate.py; run_egpt_dsec_alignment.py runs the whole per-duration job for these strategies)
    from train_accelerate import main

    argv = ["--strategy", "lightweight", "--dsec_data_dir", str(tree), "--durations", "1s", "--dsec_cache_dir",
            str(tmp_path / "cache"), "--clip_model", str(tmp_path / "clip"), "--num_epochs", "1", "--batch_size", "2",
            "--output_dir", str(tmp_path / "lw"), "--cpu"]
    assert main(argv) == 0
    info = json.loads((tmp_path / "lw" / "1s" / "final" / "training_info.json").read_text())
    features = AlignmentDataset.from_directory(tmp_path / "lw" / "1s" / "features" / "train")
    assert info["data"]["type"] == "dsec_features" and info["dims"] == {"event_dim": 64, "target_dim": 64}
    tail = info["data"]["val_split"] == "tail"  # no validation sequence: the last rows of train are held out
    assert (info["counts"]["train"] + info["counts"]["val"] if tail else info["counts"]["train"]) == len(features) >= 4


def test_every_duration_is_checked_before_training(tmp_path, capsys):
    _feature_dirs(tmp_path / "200ms")
    _feature_dirs(tmp_path / "1s", n_train=8)  # too small for the batch (6 train rows after the 20% tail split)
    from train_accelerate import main

    argv = ["--strategy", "lightweight", "--durations", "200ms", "1s", "--train_dir", str(tmp_path / "{duration}/train"),
            "--output_dir", str(tmp_path / "runs"), "--num_epochs", "1", "--batch_size", "16", "--cpu"]
    assert main(argv) == 2  # a user error: one stderr line, exit status 2, no traceback
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert re.search(r": error: batch_size=16 is larger than the training data of 1s \(6 samples\)$", err)
    assert not (tmp_path / "runs").exists()  # the 200ms run did not start either


@pytest.mark.parametrize("argv, message", [
    (["--strategy", "lightweight", "--durations", "200ms", "--num_epochs", "10"], "exactly one data source"),
    (["--train_dir", "TMP", "--durations", "3s"], "unknown ['3s']"),
    (["--train_dir", "TMP/nope"], "TrainConfig.train_dir: directory"),
    (["--train_dir", "TMP", "--num_epochs", "ten"], "invalid int value: 'ten'"),
    (["--train_dir", "TMP", "--no_such_flag", "1"], "arguments are not used by the HfArgumentParser: ['--no_such_flag', '1']"),
    (["--train_dir", "TMP", "--batch_size", "0"], "TrainConfig.batch_size=0 is invalid"),
])
def test_user_errors_are_one_line_exit_2(tmp_path, capsys, argv, message):
    """Bad flags, missing paths and TrainConfig ValueErrors (the run_egpt_dsec_alignment.py case of issue 11:
    --durations without a data source) exit 2 with one stderr line naming the problem."""
    from train_accelerate import main

    argv = [a.replace("TMP", str(tmp_path)) for a in argv] + ["--output_dir", str(tmp_path / "o")]
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse errors leave through SystemExit(2)
        status = exc.code
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert message in err and ": error: " in err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_push_to_hub_at_the_end(tmp_path):
    """--push_to_hub uploads the final directory (weights, config, module files, card, training_info) through
    modeling_evalign.hub.push to a loopback Hub; the client runs in a subprocess (HF_ENDPOINT is read at import)."""
    from hub_server import LoopbackHub

    train_dir, val_dir = _feature_dirs(tmp_path)
    with LoopbackHub(max_lifetime_s=300) as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0",
               "HF_TOKEN": "hf_dummy_loopback_token", "HF_HOME": str(tmp_path / "hf_home"),
               "NO_PROXY": "127.0.0.1,localhost", "PYTHONPATH": str(REPO)}
        for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            env.pop(proxy, None)
        argv = [sys.executable, str(REPO / "train_accelerate.py"), "--strategy", "lightweight", "--train_dir",
                str(train_dir), "--val_dir", str(val_dir), "--output_dir", str(tmp_path / "out"), "--num_epochs", "1",
                "--batch_size", "16", "--cpu", "--push_to_hub", "--hub_model_id", "evalign-test/trained-tiny"]
        proc = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
        files = hub.files("evalign-test/trained-tiny")
    local = tmp_path / "out" / "final"
    for name in ("config.json", "model.safetensors", "training_info.json", "README.md", "modeling_lightweight.py"):
        assert files[name] == (local / name).read_bytes(), name
    assert "evalign-test/trained-tiny" in files["README.md"].decode()


def test_image_pair_dataset_converts_histograms_and_frames():
    import numpy as np
    from PIL import Image

    from modeling_evalign.features.clip_preprocessing import clip_preprocess
    from modeling_evalign.training.data import ImagePairDataset

    class Rows:  # the two datasets.Dataset members the wrapper uses
        column_names = ["event_histogram", "eventgpt_frames", "rgb"]

        def __init__(self, rows):
            self.rows = rows

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            return self.rows[i]

    rng = np.random.default_rng(0)
    hist = rng.random((12, 16, 3)).astype(np.float32)
    frames = [Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)) for _ in range(3)]
    rgb = Image.fromarray(rng.integers(0, 256, (18, 24, 3), dtype=np.uint8))
    rows = Rows([{"event_histogram": hist.tolist(), "eventgpt_frames": frames, "rgb": rgb}])
    item = ImagePairDataset(rows, "event_histogram", "rgb", image_size=8)[0]
    expected = clip_preprocess([(hist * 255).round().astype(np.uint8), rgb], 8)
    assert torch.equal(item["event_pixel_values"], expected[0]) and torch.equal(item["pixel_values"], expected[1])
    item = ImagePairDataset(rows, "eventgpt_frames", "rgb", image_size=8)[0]
    assert torch.equal(item["event_pixel_values"], clip_preprocess([frames[-1]], 8)[0])
    with pytest.raises(KeyError, match="voxel_grid"):
        ImagePairDataset(rows, "voxel_grid", "rgb", image_size=8)


def test_existing_checkpoints_are_not_mixed_with_a_new_run(tmp_path):
    train(_config(tmp_path, checkpointing_steps=2))  # checkpoints 2, 4, 6, 8 -> limit 3 keeps 4, 6, 8
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train(_config(tmp_path))
    # resuming from an older checkpoint abandons the newer ones, so `latest` follows the resumed run
    resumed = train(_config(tmp_path, resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-4"), stop_at_step=5))
    assert resumed.global_step == 5
    assert [p.name for p in list_checkpoints(tmp_path / "out")] == ["checkpoint-4", "checkpoint-5"]
    assert find_latest_checkpoint(tmp_path / "out").name == "checkpoint-5"


def test_closed_form_warm_start_is_the_ridge_solution(tmp_path):
    import numpy as np

    # a learning rate of ~0 leaves the warm start untouched: the final weights are the ridge solution
    result = train(_config(tmp_path, closed_form_init=0.5, learning_rate=1e-12, num_epochs=1))
    state = load_file(str(result.output_dir / "final" / "model.safetensors"))
    data = AlignmentDataset.from_directory(tmp_path / "train")
    x, y = data.event_features.double().numpy(), data.target_features.double().numpy()
    xc, yc = x - x.mean(0), y - y.mean(0)
    # centred ridge as an augmented least-squares system (bias unpenalised)
    a = np.vstack([xc, np.sqrt(0.5) * np.eye(x.shape[1])])
    b = np.vstack([yc, np.zeros((x.shape[1], y.shape[1]))])
    w = np.linalg.lstsq(a, b, rcond=None)[0]
    bias = y.mean(0) - x.mean(0) @ w
    weight = next(v for k, v in state.items() if k.endswith("weight")).double().numpy()
    bias_got = next(v for k, v in state.items() if k.endswith("bias")).double().numpy()
    np.testing.assert_allclose(weight, w.T, atol=1e-5)
    np.testing.assert_allclose(bias_got, bias, atol=1e-5)
    with pytest.raises(ValueError, match="closed_form_init.*lightweight"):
        _config(tmp_path, strategy="contrastive", closed_form_init=0.5)


def test_triple_modal_trains_through_the_loop(tmp_path):
    from modeling_evalign.triple_modal.configuration_triple_modal import TripleModalAlignmentConfig
    from modeling_evalign.triple_modal.modeling_triple_modal import TripleModalAlignmentModule
    from modeling_evalign.triple_modal.text_tower import save_tiny_text_tower

    classes = ["car", "dog", "tree"]
    cfg = TripleModalAlignmentConfig()
    tower = save_tiny_text_tower(tmp_path / "text", [t.format(c) for c in classes for t in
                                 (cfg.event_prompt_template, cfg.image_prompt_template)], projection_dim=16)
    g = torch.Generator().manual_seed(0)
    centres_e, centres_t = torch.randn(3, 12, generator=g), torch.randn(3, 16, generator=g)
    for split, n in (("train", 48), ("val", 12)):
        labels = torch.arange(n) % 3
        e = centres_e[labels] + 0.3 * torch.randn(n, 12, generator=g)
        t = centres_t[labels] + 0.3 * torch.randn(n, 16, generator=g)
        AlignmentDataset(e, t, [{"scene": classes[int(c)]} for c in labels]).save_to_directory(tmp_path / split)
    result = train(_config(tmp_path, strategy="triple_modal", text_model=str(tower), num_epochs=8,
                           learning_rate=5e-3, model_config=["hidden_dim=32"]))
    final = result.output_dir / "final"
    assert json.loads((final / "config.json").read_text())["text_model_id"] == Path(tower).name  # no machine path
    model = TripleModalAlignmentModule.from_pretrained(final, text_model_id=str(tower))  # re-attach the local tower
    assert model.config.class_names == classes  # sorted names of the metadata field
    assert not any("text" in k for k in load_file(str(final / "model.safetensors")))  # tower not saved
    assert sum(result.losses[-3:]) < sum(result.losses[:3])
    val = AlignmentDataset.from_directory(tmp_path / "val")
    predicted = model.zero_shot_classify(val.event_features, classes).labels
    truth = torch.tensor([classes.index(s) for s in val.metadata_column("scene")])
    assert (predicted == truth).float().mean() > 0.6  # chance is 1/3
    with pytest.raises(ValueError, match="'scene' has 1 class"):
        one = tmp_path / "one"
        AlignmentDataset(torch.randn(8, 12), torch.randn(8, 16), [{"scene": "car"}] * 8).save_to_directory(one / "train")
        train(_config(tmp_path, "o2", strategy="triple_modal", text_model=str(tower), train_dir=str(one / "train"),
                      batch_size=4))


def test_launcher_env_decides_the_device(tmp_path, monkeypatch):
    """A launcher's processes form one group whatever the device: without a GPU they go to CPU/gloo even when
    neither --cpu nor ACCELERATE_USE_CPU is given (issue 13: each process trained alone); with GPUs, unchanged."""
    from modeling_evalign.training import loop

    cfg = _config(tmp_path)
    cfg_gpu = dataclasses.replace(cfg, cpu=False)
    for name in ("ACCELERATE_USE_CPU", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(loop, "_has_accelerator_device", lambda: False)
    assert loop.use_cpu(cfg) and not loop.use_cpu(cfg_gpu)  # one plain process: accelerate's own default
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")
    assert loop.use_cpu(cfg_gpu)  # the README's env flag (PartialState alone ignores it)
    monkeypatch.delenv("ACCELERATE_USE_CPU")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert loop.use_cpu(cfg_gpu)
    monkeypatch.setattr(loop, "_has_accelerator_device", lambda: True)
    assert not loop.use_cpu(cfg_gpu)  # N GPUs: NCCL as before
    # a single-process state of the other device kind is rebuilt, not reused (no "already initialized" error)
    for name in ("LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name)
    from accelerate import Accelerator

    Accelerator(cpu=False)
    assert train(cfg).global_step == 9
