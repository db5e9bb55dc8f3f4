"""Trainer: learns linear-plus-noise pairs from chance to near-perfect retrieval for both strategies,
writes a loadable checkpoint with training_info.json, repeats exactly for a seed, resumes after a crash."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from transformers import AutoModel

from modeling_evalign.contrastive.configuration_contrastive import ContrastiveAlignmentConfig
from modeling_evalign.contrastive.modeling_contrastive import ContrastiveAlignmentModule
from modeling_evalign.data.alignment_dataset import AlignmentDataset
from modeling_evalign.data.synthetic_features import make_linear_pairs
from modeling_evalign.evaluation.metrics import TimeWindows, bidirectional_recall
from modeling_evalign.lightweight.configuration_lightweight import LightweightAlignmentConfig
from modeling_evalign.lightweight.modeling_lightweight import LightweightAlignmentModule
from modeling_evalign.training.trainer import TRAINING_INFO_NAME, ContrastiveAlignmentTrainer

DE, DT = 16, 24


@pytest.fixture(scope="module")
def splits():
    pairs = make_linear_pairs(288, DE, DT, noise=0.1, seed=7)
    samples = [{"sequence": f"s{i // 8}"} for i in range(288)]
    return AlignmentDataset(pairs.event_features, pairs.target_features, samples).split(1 / 3, seed=0)


def _model(strategy: str):
    if strategy == "lightweight":
        return LightweightAlignmentModule(LightweightAlignmentConfig(event_dim=DE, target_dim=DT))
    return ContrastiveAlignmentModule(ContrastiveAlignmentConfig(event_dim=DE, target_dim=DT))


@pytest.mark.parametrize("strategy", ["lightweight", "contrastive"])
def test_learns_linear_pairs_from_chance(strategy, splits, tmp_path):
    train, val = splits
    model = _model(strategy)
    trainer = ContrastiveAlignmentTrainer(model, train, val, lr=1e-2, batch_size=32, seed=0, progress=False)
    result = trainer.train(num_epochs=12, save_path=tmp_path / "alignment.pt")
    n_val = len(val)
    assert result.initial_metrics["e2t/R@1"] < 5 / n_val  # an untrained model is at chance (1/96)
    assert result.final_metrics["e2t/R@1"] > 0.9 and result.final_metrics["t2e/R@1"] > 0.9
    # the reported metric is what an independent recomputation on the saved model gives
    loaded = AutoModel.from_pretrained(tmp_path / "alignment.pt")
    assert type(loaded) is type(model)
    with torch.no_grad():
        aligned = loaded(event_features=val.event_features).aligned_features
    assert bidirectional_recall(aligned, val.target_features) == pytest.approx(
        {k: v for k, v in result.final_metrics.items() if "/R@" in k}
    )
    assert len(result.history) == 12 and result.history[-1]["val/e2t/R@1"] == result.final_metrics["e2t/R@1"]
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_training_info_and_checkpoint_layout(splits, tmp_path):
    train, val = splits
    trainer = ContrastiveAlignmentTrainer(
        _model("lightweight"), train, val, lr=5e-3, batch_size=40, weight_decay=0.0, seed=3, progress=False
    )
    result = trainer.train(num_epochs=3, save_path=tmp_path / "ckpt")
    files = {p.name for p in (tmp_path / "ckpt").iterdir()}
    assert {"config.json", "model.safetensors", TRAINING_INFO_NAME} <= files
    assert not list(tmp_path.glob(".ckpt*"))  # resume file removed, no temp dirs left
    info = json.loads((tmp_path / "ckpt" / TRAINING_INFO_NAME).read_text())
    # one training_info writer for the facade and train_accelerate.py: strategy name + model_type
    assert info["strategy"] == "lightweight" and info["model_type"] == "evalign_lightweight"
    assert info["model_class"] == "LightweightAlignmentModel" and info["num_processes"] == 1
    assert (info["train_size"], info["val_size"], info["event_dim"], info["target_dim"]) == (192, 96, DE, DT)
    assert info["num_epochs"] == 3 and [h["epoch"] for h in info["history"]] == [1, 2, 3]
    assert info["hyperparameters"]["batch_size"] == 40 and info["hyperparameters"]["seed"] == 3
    assert info["num_parameters"] == DE * DT + DT
    assert info["final_metrics"] == pytest.approx(result.final_metrics)
    assert info["retrieval_positives"] == "pair (query i <-> gallery i)"
    assert set(info["final_metrics"]) >= {"loss", "mse", "cosine_similarity", "e2t/R@1", "t2e/R@10"}
    assert set(info["versions"]) >= {"evalign", "torch", "transformers", "python"}
    assert info["train_time_s"] > 0
    # cosine schedule without warm-up: lr after epoch e of E is lr0 * (1 + cos(pi * e / E)) / 2
    steps = 192 // 40
    for h in info["history"]:
        want = 5e-3 * 0.5 * (1 + math.cos(math.pi * h["epoch"] * steps / (3 * steps)))
        assert h["lr"] == pytest.approx(want, abs=1e-12)
    # the validation MSE equals a recomputation from the saved weights
    loaded = AutoModel.from_pretrained(tmp_path / "ckpt")
    with torch.no_grad():
        aligned = loaded(event_features=val.event_features).aligned_features
    assert info["final_metrics"]["mse"] == pytest.approx(float(((aligned - val.target_features) ** 2).mean()), rel=1e-5)


def test_same_seed_same_weights_other_seed_differs(splits):
    train, _ = splits

    def run(seed):
        torch.manual_seed(0)  # same initial weights every time
        model = _model("contrastive")
        ContrastiveAlignmentTrainer(model, train, lr=1e-2, batch_size=32, seed=seed, progress=False).train(num_epochs=2)
        return model.state_dict()

    a, b, c = run(1), run(1), run(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_resume_after_crash_equals_uninterrupted_run(splits, tmp_path):
    train, val = splits
    kwargs = {"lr": 1e-2, "batch_size": 32, "seed": 4, "progress": False}
    torch.manual_seed(0)
    reference = _model("lightweight")
    ContrastiveAlignmentTrainer(reference, train, val, **kwargs).train(num_epochs=4)

    torch.manual_seed(0)
    crashed = _model("lightweight")
    forward, calls = crashed.forward, []

    def killed_in_epoch_3(*args, **kw):  # 6 steps per epoch: the process dies at step 15
        if crashed.training:
            calls.append(1)
            if len(calls) == 15:
                raise KeyboardInterrupt("simulated kill")
        return forward(*args, **kw)

    crashed.forward = killed_in_epoch_3
    with pytest.raises(KeyboardInterrupt):
        ContrastiveAlignmentTrainer(crashed, train, val, **kwargs).train(num_epochs=4, save_path=tmp_path / "run")
    assert (tmp_path / ".run.resume" / "checkpoint-12").is_dir() and not (tmp_path / "run").exists()

    torch.manual_seed(123)
    fresh = _model("lightweight")  # a new process: different init, state comes from the checkpoint
    result = ContrastiveAlignmentTrainer(fresh, train, val, **kwargs).train(num_epochs=4, save_path=tmp_path / "run")
    assert result.resumed_from_epoch == 2 and [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    ref, got = reference.state_dict(), fresh.state_dict()
    assert all(torch.allclose(ref[k], got[k], atol=1e-6) for k in ref)
    assert not (tmp_path / ".run.resume").exists()
    assert json.loads((tmp_path / "run" / TRAINING_INFO_NAME).read_text())["resumed_from_epoch"] == 2
    # a different setting does not resume a foreign run: it starts over (and says so in the log)
    ContrastiveAlignmentTrainer(_model("lightweight"), train, val, **kwargs).train(num_epochs=1, save_path=tmp_path / "x")
    assert json.loads((tmp_path / "x" / TRAINING_INFO_NAME).read_text())["resumed_from_epoch"] is None


def _recall64(query: np.ndarray, gallery: np.ndarray, groups, ks=(1, 5, 10)) -> dict[str, float]:
    """Independent float64 loop: best same-group score, rank = rows of other groups scoring >= it."""
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    sim = q @ g.T
    groups = np.asarray(groups)
    ranks = []
    for i in range(len(q)):
        same = groups == groups[i]
        ranks.append(int((sim[i, ~same] >= sim[i, same].max()).sum()))
    return {k: float(np.mean(np.asarray(ranks) < k)) for k in ks}


def test_token_level_features_and_group_positives(tmp_path):
    """Token features: retrieval on the FLATTENED tokens (the README's rule, every entry point's), not their mean."""
    pairs = make_linear_pairs(48, DE, DT, noise=0.1, seed=2, num_tokens=3)
    samples = [{"sequence": f"s{i // 2}"} for i in range(48)]
    train, val = AlignmentDataset(pairs.event_features, pairs.target_features, samples).split(0.5, seed=0)
    trainer = ContrastiveAlignmentTrainer(
        _model("lightweight"), train, val, lr=1e-2, batch_size=8, positive_group_key="sequence", progress=False
    )
    metrics = trainer.evaluate()
    model = trainer.model
    with torch.no_grad():
        aligned = model(event_features=val.event_features).aligned_features.double().flatten(1).numpy()
    target = val.target_features.double().flatten(1).numpy()
    groups = val.metadata_column("sequence")
    e2t, t2e = _recall64(aligned, target, groups), _recall64(target, aligned, groups)
    for k in (1, 5, 10):
        assert metrics[f"e2t/R@{k}"] == pytest.approx(e2t[k]) and metrics[f"t2e/R@{k}"] == pytest.approx(t2e[k])
    pooled = bidirectional_recall(torch.from_numpy(aligned).view(len(val), 3, -1).mean(1),
                                  val.target_features.mean(1), positive_groups=groups)
    assert any(metrics[k] != pytest.approx(pooled[k]) for k in pooled)  # the old mean-pooling rule differs here
    assert metrics["mse"] == pytest.approx(float(((aligned - target) ** 2).mean()), rel=1e-5)
    cos = (aligned * target).sum(1) / (np.linalg.norm(aligned, axis=1) * np.linalg.norm(target, axis=1))
    assert metrics["cosine_similarity"] == pytest.approx(float(cos.mean()), rel=1e-5)  # per window on the flattened rows


def test_bad_arguments_raise(splits, tmp_path):
    train, val = splits
    model = _model("lightweight")
    with pytest.raises(ValueError, match=r"batch_size=500 is larger than the training set \(192 samples\)"):
        ContrastiveAlignmentTrainer(model, train, batch_size=500)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        ContrastiveAlignmentTrainer(model, train, batch_size=0)
    other = _model("contrastive").__class__(ContrastiveAlignmentConfig(event_dim=DE + 1, target_dim=DT))
    with pytest.raises(ValueError, match=r"train_dataset.event_dim=16 but model.config.event_dim=17"):
        ContrastiveAlignmentTrainer(other, train)
    with pytest.raises(ValueError, match="lr must be"):
        ContrastiveAlignmentTrainer(model, train, lr=0.0)
    with pytest.raises(ValueError, match="positive_group_key / overlap_positives need a val_dataset"):
        ContrastiveAlignmentTrainer(model, train, positive_group_key="sequence")
    with pytest.raises(TypeError, match="torch.nn.Module"):
        ContrastiveAlignmentTrainer(object(), train)
    trainer = ContrastiveAlignmentTrainer(model, train, progress=False)
    with pytest.raises(ValueError, match="num_epochs"):
        trainer.train(num_epochs=0)
    (tmp_path / "file.pt").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="is a file"):
        trainer.train(num_epochs=1, save_path=tmp_path / "file.pt")
    with pytest.raises(ValueError, match="no dataset to evaluate"):
        trainer.evaluate()


def test_warmup_then_cosine_schedule(splits):
    train, _ = splits
    trainer = ContrastiveAlignmentTrainer(_model("lightweight"), train, lr=1e-3, batch_size=48, warmup_ratio=0.5,
                                          progress=False)
    history = trainer.train(num_epochs=4).history  # 4 steps per epoch, 16 steps, 8 warm-up steps
    total, warm = 16, 8
    for h in history:
        step = h["epoch"] * 4  # LambdaLR's step count after the epoch
        want = (step + 1) / warm if step < warm else 0.5 * (1 + math.cos(math.pi * (step - warm) / (total - warm)))
        assert h["lr"] == pytest.approx(1e-3 * want, abs=1e-12)
    assert history[0]["lr"] == pytest.approx(1e-3 * 5 / 8) and history[1]["lr"] == pytest.approx(1e-3)


def test_overlap_positives_use_window_metadata():
    pairs = make_linear_pairs(40, DE, DT, noise=0.1, seed=3)
    samples = [{"sequence": f"s{i // 10}", "window_start_us": (i % 10) * 500_000,
                "window_end_us": (i % 10) * 500_000 + 1_000_000} for i in range(40)]
    ds = AlignmentDataset(pairs.event_features, pairs.target_features, samples)
    trainer = ContrastiveAlignmentTrainer(_model("contrastive"), ds, ds, batch_size=8, overlap_positives=True,
                                          progress=False)
    with torch.no_grad():
        aligned = trainer.model(event_features=ds.event_features).aligned_features
    want = bidirectional_recall(aligned, ds.target_features, positive_windows=TimeWindows.from_samples(samples))
    got = trainer.evaluate()
    assert {k: v for k, v in got.items() if "/R@" in k} == pytest.approx(want)
    assert got["e2t/R@1"] > bidirectional_recall(aligned, ds.target_features)["e2t/R@1"]
    with pytest.raises(ValueError, match="not both"):
        ContrastiveAlignmentTrainer(_model("contrastive"), ds, ds, overlap_positives=True, positive_group_key="sequence")
    with pytest.raises(KeyError, match="per-sample metadata"):
        plain = AlignmentDataset(pairs.event_features, pairs.target_features)
        ContrastiveAlignmentTrainer(_model("contrastive"), plain, plain, overlap_positives=True)


def test_facade_and_train_accelerate_are_one_loop(tmp_path):
    """The same seed and data through ContrastiveAlignmentTrainer and through train_accelerate.py give the same
    weights, losses and metrics (dropout on, so the RNG stream matters too)."""
    from accelerate.utils import set_seed
    from safetensors.torch import load_file
    from test_training import _feature_dirs

    from train_accelerate import main

    train_dir, val_dir = _feature_dirs(tmp_path)
    overrides = {"adapter_type": "mlp", "hidden_dim": 16, "dropout": 0.3}
    argv = ["--strategy", "lightweight", "--train_dir", str(train_dir), "--val_dir", str(val_dir), "--output_dir",
            str(tmp_path / "cli"), "--num_epochs", "3", "--batch_size", "16", "--learning_rate", "0.01",
            "--weight_decay", "0.01", "--max_grad_norm", "0", "--seed", "5", "--cpu",
            "--model_config", *[f"{k}={json.dumps(v)}" for k, v in overrides.items()]]
    assert main(argv) == 0

    set_seed(5)  # what the loop does before building the model
    model = LightweightAlignmentModule(LightweightAlignmentConfig(event_dim=8, target_dim=6, **overrides))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    train, val = AlignmentDataset.from_directory(train_dir), AlignmentDataset.from_directory(val_dir)
    result = ContrastiveAlignmentTrainer(model, train, val, lr=0.01, batch_size=16, weight_decay=0.01, seed=5,
                                         device="cpu", progress=False).train(num_epochs=3, save_path=tmp_path / "facade")
    cli = load_file(str(tmp_path / "cli" / "final" / "model.safetensors"))
    facade = load_file(str(tmp_path / "facade" / "model.safetensors"))
    assert cli.keys() == facade.keys() and all(torch.equal(cli[k], facade[k]) for k in cli)
    cli_info = json.loads((tmp_path / "cli" / "final" / TRAINING_INFO_NAME).read_text())
    facade_info = json.loads((tmp_path / "facade" / TRAINING_INFO_NAME).read_text())
    assert facade_info["losses"] == cli_info["losses"] and len(cli_info["losses"]) == 9
    # it trained: not two copies of the initial weights
    assert all(not torch.equal(initial[k], facade[k]) for k in facade)
    for key in ("mse", "e2t/R@1", "t2e/R@5"):
        assert result.final_metrics[key] == pytest.approx(cli_info["final_metrics"][key], rel=1e-6)
    assert result.final_metrics["cosine_similarity"] == pytest.approx(cli_info["final_metrics"]["cosine"], rel=1e-6)


def test_sigterm_keeps_the_checkpoint_and_never_reports_a_finished_run(splits, tmp_path):
    import os
    import signal

    train, val = splits
    kwargs = {"lr": 1e-2, "batch_size": 32, "seed": 4, "progress": False}
    torch.manual_seed(0)
    reference = _model("lightweight")
    ContrastiveAlignmentTrainer(reference, train, val, **kwargs).train(num_epochs=3)

    torch.manual_seed(0)
    stopped = _model("lightweight")
    forward, calls = stopped.forward, []

    def sigterm_at_step_8(*args, **kw):  # the loop's handler saves a checkpoint at the step boundary
        if stopped.training:
            calls.append(1)
            if len(calls) == 8:
                os.kill(os.getpid(), signal.SIGTERM)
        return forward(*args, **kw)

    stopped.forward = sigterm_at_step_8
    with pytest.raises(KeyboardInterrupt, match="SIGTERM at step 8"):
        ContrastiveAlignmentTrainer(stopped, train, val, **kwargs).train(num_epochs=3, save_path=tmp_path / "run")
    assert (tmp_path / ".run.resume" / "checkpoint-8").is_dir() and not (tmp_path / "run").exists()
    fresh = _model("lightweight")
    result = ContrastiveAlignmentTrainer(fresh, train, val, **kwargs).train(num_epochs=3, save_path=tmp_path / "run")
    assert result.resumed_from_epoch == 1
    ref, got = reference.state_dict(), fresh.state_dict()
    assert all(torch.allclose(ref[k], got[k], atol=1e-6) for k in ref)
