"""Cross-duration matrix: train on one duration, evaluate on all; tables, JSON and heatmap agree."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from modeling_evalign.data.alignment_dataset import AlignmentDataset
from modeling_evalign.evaluation.cross_duration import (
    cross_duration_matrix,
    ridge_fitter,
    write_cross_duration_report,
)
from modeling_evalign.evaluation.plots import data_path


def _write(path, weight, n=40, seed=0, noise=0.05):
    g = torch.Generator().manual_seed(seed)
    ev = torch.randn(n, weight.shape[0], generator=g)
    tg = ev @ weight + noise * torch.randn(n, weight.shape[1], generator=g)
    samples = [{"sequence": f"seq{i // 10}"} for i in range(n)]
    return AlignmentDataset(ev, tg, samples).save_to_directory(path)


@pytest.fixture
def dirs(tmp_path):
    g = torch.Generator().manual_seed(42)
    w_short, w_long = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    # 200ms and 1s share the event -> target map; 20s follows another one
    return {
        "200ms": _write(tmp_path / "200ms", w_short, seed=1),
        "1s": _write(tmp_path / "1s", w_short, seed=2),
        "20s": _write(tmp_path / "20s", w_long, seed=3),
    }


def _r1_by_hand(query: np.ndarray, gallery: np.ndarray) -> float:
    """Event -> target R@1 by an explicit loop (cosine, pessimistic ties)."""
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    gl = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    hits = 0
    for i in range(len(q)):
        scores = [float(q[i] @ gl[j]) for j in range(len(gl))]
        hits += sum(1 for j, s in enumerate(scores) if j != i and s >= scores[i]) == 0
    return hits / len(q)


def test_matrix_matches_independent_fit_and_structure(dirs):
    result = cross_duration_matrix(dirs, fitter=ridge_fitter(1e-3), metric="e2t/R@1", val_fraction=0.25)
    names = ["200ms", "1s", "20s"]
    assert result.durations == names
    m = np.array(result.matrix)
    assert m.shape == (3, 3)
    # same map -> transfers; different map -> does not
    assert m[0, 0] > 0.9 and m[0, 1] > 0.9 and m[1, 0] > 0.9 and m[2, 2] > 0.9
    assert m[0, 2] < 0.5 and m[2, 0] < 0.5
    # cell (1s -> 20s) recomputed independently: numpy least squares + a loop for R@1
    train_1s, _ = AlignmentDataset.from_directory(dirs["1s"]).split(0.25, seed=0)
    _, val_20s = AlignmentDataset.from_directory(dirs["20s"]).split(0.25, seed=0)
    x, y = train_1s.event_features.double().numpy(), train_1s.target_features.double().numpy()
    mx, my = x.mean(0), y.mean(0)
    w = np.linalg.solve((x - mx).T @ (x - mx) + 1e-3 * np.eye(8), (x - mx).T @ (y - my))
    pred = (val_20s.event_features.double().numpy() - mx) @ w + my
    assert m[1, 2] == pytest.approx(_r1_by_hand(pred, val_20s.target_features.double().numpy()))
    mse = float(((pred - val_20s.target_features.double().numpy()) ** 2).mean())
    assert result.metrics["1s"]["20s"]["mse"] == pytest.approx(mse, rel=1e-4)
    assert result.sizes == {n: {"train": 30, "val": 10} for n in names}


def test_report_files_agree(dirs, tmp_path):
    result = cross_duration_matrix(dirs, metric="mean/R@1", group_by="sequence", positive_key="sequence")
    paths = write_cross_duration_report(result, tmp_path / "report")
    saved = json.loads(paths["json"].read_text())
    assert saved["matrix"] == result.matrix and saved["durations"] == result.durations
    assert saved["metric"] == "mean/R@1" and "whole sequence groups" in saved["split"]
    heat = json.loads(data_path(paths["heatmap"]).read_text())
    assert heat["matrix"] == result.matrix and heat["rows"] == heat["cols"] == result.durations
    assert paths["heatmap"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths["heatmap"].stat().st_size > 1024
    md = paths["markdown"].read_text()
    for name, row in zip(result.durations, result.matrix):
        assert f"| {name} | " + " | ".join(f"{v:.3f}" for v in row) + " |" in md
    assert "![cross-duration heatmap](cross_duration_heatmap.png)" in md


def test_bad_input(dirs, tmp_path):
    with pytest.raises(ValueError, match="at least 2 durations"):
        cross_duration_matrix({"1s": dirs["1s"]})
    g = torch.Generator().manual_seed(0)
    other = _write(tmp_path / "wide", torch.randn(8, 5, generator=g))
    with pytest.raises(ValueError, match="differ in"):
        cross_duration_matrix({"1s": dirs["1s"], "wide": other})
    with pytest.raises(KeyError, match="not computed"):
        cross_duration_matrix({"1s": dirs["1s"], "20s": dirs["20s"]}, metric="R@1000")
    with pytest.raises(FileNotFoundError):
        cross_duration_matrix({"1s": dirs["1s"], "x": tmp_path / "missing"})


def _scene_dir(path, weight, seed):
    g = torch.Generator().manual_seed(seed)
    scenes = ["city", "forest", "lake"]
    labels = torch.arange(3).repeat_interleave(12)
    centres = 3 * torch.randn(3, weight.shape[1], generator=torch.Generator().manual_seed(7))
    tg = centres[labels] + torch.randn(len(labels), weight.shape[1], generator=g)
    ev = tg @ weight.T + 0.05 * torch.randn(len(labels), weight.shape[0], generator=g)
    samples = [{"scene": scenes[c], "sequence": f"{scenes[c]}_{i % 2}"} for i, c in enumerate(labels.tolist())]
    return AlignmentDataset(ev, tg, samples).save_to_directory(path)


@pytest.mark.slow
def test_compare_strategies_report(tmp_path, monkeypatch):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "dataset_scripts" / "compare_strategies.py"
    spec = importlib.util.spec_from_file_location("compare_strategies", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    w = torch.randn(10, 8, generator=torch.Generator().manual_seed(5))
    feats = {"200ms": _scene_dir(tmp_path / "f200", w, 1), "1s": _scene_dir(tmp_path / "f1", w, 2)}
    out = tmp_path / "report"
    results = module.main([
        "--features", *(f"{k}={v}" for k, v in feats.items()), "--out", str(out),
        "--strategies", "lightweight", "contrastive", "triple_modal", "reconstruction",
        "--epochs", "3", "--batch-size", "9", "--tiny-text-tower", "--lr", "3e-3",
    ])
    md = (out / "report.md").read_text()
    assert set(results["strategies"]) == {"lightweight", "contrastive", "triple_modal"}
    assert "reconstruction" in results["skipped"] and "**reconstruction**" in md
    for name, res in results["strategies"].items():
        for duration, entry in res["per_duration"].items():
            m = entry["metrics"]
            cells = " | ".join(f"{m[k]:.3f}" for k in module.TABLE_METRICS)
            assert f"| {name} | {duration} | 27 | 9 | {cells} |" in md
        cross = json.loads((out / name / "cross_duration.json").read_text())
        assert cross["matrix"] == res["cross_duration"]["matrix"]
        heat = out / name / "cross_duration_heatmap.png"
        assert heat.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({name}/cross_duration_heatmap.png)" in md
        tsne = out / f"{name}_tsne.png"
        assert tsne.stat().st_size > 1024
        assert json.loads(data_path(tsne).read_text())["panels"]["after alignment"]["scene"][:1] in (["city"], ["forest"], ["lake"])
    # ridge on a noiseless-ish linear map retrieves almost perfectly within a duration
    assert results["strategies"]["lightweight"]["per_duration"]["1s"]["metrics"]["mean/R@1"] > 0.8
    for name in ("contrastive", "triple_modal"):
        assert (out / f"{name}_training_curve.png").is_file()
        assert len(results["strategies"][name]["per_duration"]["200ms"]["history"]) == 3
    zs = results["strategies"]["triple_modal"]["per_duration"]["200ms"]
    assert "3 classes from 'scene'" in zs["notes"] and 0.0 <= zs["zero_shot_accuracy"] <= 1.0
    assert "zero-shot classification" in md

    # a rerun (e.g. after a kill) reloads every finished fit instead of training again
    def no_training(*a, **k):
        def fit(dataset):
            raise AssertionError("refitted although a finished fit was on disk")
        return fit

    monkeypatch.setattr(module, "_fitter", no_training)
    again = module.main([
        "--features", *(f"{k}={v}" for k, v in feats.items()), "--out", str(out),
        "--strategies", "lightweight", "contrastive", "triple_modal",
        "--epochs", "3", "--batch-size", "9", "--tiny-text-tower", "--lr", "3e-3",
    ])
    for name, res in results["strategies"].items():
        for duration, entry in res["per_duration"].items():
            redo = again["strategies"][name]["per_duration"][duration]
            for key, value in entry["metrics"].items():
                assert redo["metrics"][key] == pytest.approx(value, abs=1e-6), (name, duration, key)
            assert redo["history"] == entry["history"]
        np.testing.assert_allclose(again["strategies"][name]["cross_duration"]["matrix"],
                                   res["cross_duration"]["matrix"], atol=1e-6)


def test_compare_strategies_bad_features_flag_is_one_line_exit_2(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    from modeling_evalign.utils.cli import run_cli

    script = Path(__file__).resolve().parent.parent / "dataset_scripts" / "compare_strategies.py"
    spec = importlib.util.spec_from_file_location("compare_strategies", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for argv, match in ((["--features", "no-equals-sign", "--out", str(tmp_path)], "DURATION=DIR"),
                        (["--features", f"1s={tmp_path / 'missing'}", f"200ms={tmp_path}", "--out", str(tmp_path)], "does not exist"),
                        (["--out", str(tmp_path)], "--features")):
        try:
            status = run_cli(lambda a: (module.main(a), 0)[1], argv, prog=module.PROG)
        except SystemExit as e:  # argparse errors exit from parse_args
            status = e.code
        assert status == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and match in err and err.startswith("compare_strategies.py: error:")
