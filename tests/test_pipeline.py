"""The main job end to end on a tiny tree: stages chain, the table matches results.json, a rerun reuses work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from modeling_evalign.data.alignment_dataset import AlignmentDataset
from modeling_evalign.evaluation.metrics import bidirectional_recall
from modeling_evalign.pipeline.job import COLUMNS, PipelineConfig, format_table, main, run_pipeline

FIRENET = Path(__file__).resolve().parents[2] / "shared" / "weights" / "firenet" / "model.pth"


def _config(out: Path, **kw) -> PipelineConfig:
    base = dict(output_dir=str(out), sequences=4, seconds=3.0, sensor_size=(64, 48), image_size=(96, 72),
                durations=["1s"], num_epochs=2, batch_size=4, tiny_clip_image_size=32, tiny_clip_patch_size=8,
                firenet=str(FIRENET) if FIRENET.is_file() else None)
    base.update(kw)
    return PipelineConfig(**base)


@pytest.mark.slow
def test_pipeline_end_to_end_and_resume(tmp_path, capsys):
    cfg = _config(tmp_path / "demo")
    rows = run_pipeline(cfg)
    strategies = [r.strategy for r in rows]
    expected = ["unaligned", "closed_form", "lightweight", "contrastive"] + (["reconstruction"] if FIRENET.is_file() else [])
    assert strategies == expected
    for r in rows:
        assert set(COLUMNS) <= set(r.metrics)
        assert all(0.0 <= r.metrics[c] <= 1.0 for c in COLUMNS if "R@" in c)

    # the closed-form row against an independent float64 ridge solve (numpy) on the same features
    feats = tmp_path / "demo" / "features" / "1s"
    train, test = AlignmentDataset.from_directory(feats / "train"), AlignmentDataset.from_directory(feats / "test")
    x, y = train.event_features.double().numpy(), train.target_features.double().numpy()
    xc, yc = x - x.mean(0), y - y.mean(0)
    w = np.linalg.solve(xc.T @ xc + cfg.ridge * np.eye(x.shape[1]), xc.T @ yc)
    pred = (test.event_features.double().numpy() - x.mean(0)) @ w + y.mean(0)
    ref = bidirectional_recall(torch.from_numpy(pred).float(), test.target_features.float())
    got = next(r for r in rows if r.strategy == "closed_form").metrics
    for key in ("e2t/R@1", "e2t/R@5", "t2e/R@1"):
        assert got[key] == pytest.approx(ref[key])
    unaligned = next(r for r in rows if r.strategy == "unaligned").metrics
    assert unaligned["mse"] == pytest.approx(
        float(((test.event_features.double() - test.target_features.double()) ** 2).mean()), rel=1e-5)

    # printed table == results.md == the rows in results.json
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert [r["strategy"] for r in saved["rows"]] == strategies
    table = format_table(rows)
    assert (tmp_path / "demo" / "results.md").read_text().strip() == table
    assert table in capsys.readouterr().out

    # a second run reuses every finished stage (no retraining: the final checkpoints are untouched)
    final = tmp_path / "demo" / "runs" / "1s" / "lightweight" / "final" / "model.safetensors"
    before = final.stat().st_mtime_ns
    again = run_pipeline(cfg)
    assert final.stat().st_mtime_ns == before
    assert [r.metrics for r in again] == [r.metrics for r in rows]


def test_pipeline_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="sequences"):
        _config(tmp_path, sequences=2)
    with pytest.raises(ValueError, match="seconds"):
        _config(tmp_path, seconds=0)
    with pytest.raises(SystemExit):
        main(["--sensor-size", "640by480"])
