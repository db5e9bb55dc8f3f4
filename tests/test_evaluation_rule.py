"""One evaluation rule: a token-level model gets the same numbers from every entry point (training validation,
training_info.json, the main job, the brief's script, the strategy map, cross-duration), equal to an
independent float64 recomputation of the README's rule (tokens flattened, strict positives)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from modeling_evalign.data.alignment_dataset import AlignmentDataset
from modeling_evalign.data.synthetic_features import make_linear_pairs

KEYS = ("e2t/R@1", "e2t/R@5", "e2t/R@10", "t2e/R@1", "t2e/R@5", "t2e/R@10", "mean/R@1", "mean/R@5", "cosine", "mse")


def _reference(aligned: np.ndarray, target: np.ndarray, groups) -> dict[str, float]:
    """float64, plain loops: rows = flattened tokens; rank = other rows scoring >= the positive."""
    a, t = aligned.reshape(len(aligned), -1), target.reshape(len(target), -1)

    def recall(q, g, same):
        qn, gn = q / np.linalg.norm(q, axis=1, keepdims=True), g / np.linalg.norm(g, axis=1, keepdims=True)
        sim = qn @ gn.T
        ranks = np.array([(sim[i, ~same[i]] >= sim[i, same[i]].max()).sum() for i in range(len(q))])
        return {k: float((ranks < k).mean()) for k in (1, 5, 10)}

    eye = np.eye(len(a), dtype=bool)
    e2t, t2e = recall(a, t, eye), recall(t, a, eye)
    out = {f"e2t/R@{k}": e2t[k] for k in e2t} | {f"t2e/R@{k}": t2e[k] for k in t2e}
    out |= {f"mean/R@{k}": (e2t[k] + t2e[k]) / 2 for k in e2t}
    g = np.asarray(groups)
    same = g[:, None] == g[None, :]
    out["seq/R@1"] = (recall(a, t, same)[1] + recall(t, a, same)[1]) / 2
    out["cosine"] = float(((a * t).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(t, axis=1))).mean())
    out["mse"] = float(((a - t) ** 2).mean())
    return out


def _close(got: dict, want: dict, keys=KEYS) -> None:
    for k in keys:
        assert got[k] == pytest.approx(want[k], rel=1e-4, abs=1e-6), k


def test_one_token_model_same_metrics_at_every_entry_point(tmp_path):
    from modeling_evalign.evaluation.cross_duration import aligner_from_model, evaluate_alignment
    from modeling_evalign.evaluation.strategy_map import _align, evaluate_split
    from modeling_evalign.pipeline import strategies as st
    from modeling_evalign.pipeline.dsec_alignment import evaluate_model
    from modeling_evalign.pipeline.report import evaluate_features
    from modeling_evalign.training.config import TrainConfig
    from modeling_evalign.training.finish import TRAINING_INFO_NAME
    from modeling_evalign.training.loop import run

    torch.manual_seed(0)
    pairs = make_linear_pairs(96, 12, 10, noise=0.4, seed=5, num_tokens=4)  # [N, 4, D] tokens
    samples = [{"sequence": f"s{i // 8}"} for i in range(96)]
    full = AlignmentDataset(pairs.event_features, pairs.target_features, samples)
    full.subset(range(64)).save_to_directory(tmp_path / "train")
    full.subset(range(64, 96)).save_to_directory(tmp_path / "validation")
    config = TrainConfig(strategy="lightweight", output_dir=str(tmp_path / "run"), train_dir=str(tmp_path / "train"),
                         val_dir=str(tmp_path / "validation"), num_epochs=2, batch_size=16, learning_rate=1e-2,
                         cpu=True, model_config=["adapter_type=\"mlp\"", "hidden_dim=8"])
    (result,) = run(config)
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tmp_path / "run" / "final").eval()
    val = AlignmentDataset.from_directory(tmp_path / "validation")
    groups = val.metadata_column("sequence")
    with torch.no_grad():
        aligned = model(event_features=val.event_features.float()).aligned_features
    assert aligned.dim() == 3  # token level: the rule matters
    want = _reference(aligned.double().numpy(), val.target_features.double().numpy(), groups)
    # the old mean-pooling rule gives other numbers on these features (so the check can fail)
    pooled = _reference(aligned.double().mean(1).numpy(), val.target_features.double().mean(1).numpy(), groups)
    assert any(pooled[k] != pytest.approx(want[k]) for k in KEYS if "R@" in k)

    info = json.loads((tmp_path / "run" / "final" / TRAINING_INFO_NAME).read_text())
    entry_points = {
        "training validation": result.val_metrics[-1],
        "training_info.json": info["final_metrics"],
        "main job": evaluate_features(st.aligned(model, val.event_features), st.targets(model, val.target_features),
                                      groups),
        "brief's script": evaluate_model(model, val),
        "strategy map": evaluate_split(_align(model, val), val, model=model),
        "cross-duration": evaluate_alignment(aligner_from_model(model)(val.event_features), val.target_features,
                                             model=model),
    }
    for name, metrics in entry_points.items():
        try:
            _close(metrics, want)
        except AssertionError as err:
            raise AssertionError(f"{name}: {err}") from err
    for name in ("main job", "brief's script", "strategy map"):
        assert entry_points[name]["seq/R@1"] == pytest.approx(want["seq/R@1"]), name
