"""Evaluation plots: real PNGs, and the JSON beside each PNG holds exactly the numbers drawn."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modeling_evalign.evaluation.plots import (
    before_after_panels,
    data_path,
    embed_2d,
    history_series,
    plot_feature_space,
    plot_heatmap,
    plot_training_curve,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 1024
    assert not list(path.parent.glob(f".{path.name}.*.tmp"))  # atomic write left nothing behind


def test_training_curve_png_and_data(tmp_path):
    history = [{"epoch": e, "train_loss": 2.0 / e, "val_loss": 2.5 / e, "R@1": 0.1 * e, "note": "x", "lr": 1e-3,
                "seconds": 4.0} for e in (1, 2, 3)]
    path = plot_training_curve(history, tmp_path / "curve.png")
    _assert_png(path)
    data = json.loads(data_path(path).read_text())
    assert data["x_label"] == "epoch" and data["x"] == [1.0, 2.0, 3.0]
    assert data["series"] == {
        "train_loss": [2.0, 1.0, 2.0 / 3],
        "val_loss": [2.5, 1.25, 2.5 / 3],
        "R@1": [0.1, 0.2, pytest.approx(0.3)],
    }
    # dict-of-lists history, missing values become gaps (None in JSON)
    path2 = plot_training_curve({"train_loss": [3.0, float("nan"), 1.0]}, tmp_path / "curve2.png")
    _assert_png(path2)
    assert json.loads(data_path(path2).read_text())["series"] == {"train_loss": [3.0, None, 1.0]}


def test_training_curve_keeps_headline_metrics(tmp_path):
    keys = ["val/e2t/R@1", "val/e2t/R@5", "val/t2e/R@1", "val/t2e/R@5", "val/mse", "val/cosine"]
    history = [{"epoch": e, "train_loss": 1.0 / e, **{k: 0.1 * e for k in keys}} for e in (1, 2)]
    path = plot_training_curve(history, tmp_path / "c.png")
    drawn = json.loads(data_path(path).read_text())["series"]
    assert set(drawn) == {"train_loss", "val/e2t/R@1", "val/t2e/R@1", "val/cosine"}


def test_training_curve_rejects_bad_history(tmp_path):
    with pytest.raises(ValueError, match="different lengths"):
        history_series({"a": [1, 2], "b": [1]})
    with pytest.raises(ValueError, match="non-empty list"):
        plot_training_curve([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="no numeric series"):
        plot_training_curve([{"epoch": 1, "note": "x"}], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"\.png"):
        plot_training_curve({"loss": [1.0]}, tmp_path / "x.jpg")


def test_heatmap_png_and_data(tmp_path):
    m = np.array([[0.9, 0.5, 0.1], [0.4, 0.8, 0.3]])
    path = plot_heatmap(m, ["200ms", "1s"], ["200ms", "1s", "20s"], tmp_path / "heat.png", title="R@1")
    _assert_png(path)
    data = json.loads(data_path(path).read_text())
    assert data == {"rows": ["200ms", "1s"], "cols": ["200ms", "1s", "20s"], "matrix": m.tolist()}
    with pytest.raises(ValueError, match=r"expected \(2, 2\)"):
        plot_heatmap(m, ["a", "b"], ["a", "b"], tmp_path / "bad.png")


def _clusters(n_per=15, dim=12, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 6, size=(3, dim))
    labels = np.repeat(np.arange(3), n_per)
    return centres[labels] + rng.normal(0, 0.5, size=(len(labels), dim)), labels


def test_tsne_keeps_separated_clusters_apart():
    x, labels = _clusters()
    y = embed_2d(x, method="tsne", seed=0)
    assert y.shape == (len(x), 2)
    d = ((y[:, None] - y[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    # every point's 2-D nearest neighbour is in its own cluster
    assert (labels[d.argmin(1)] == labels).all()
    with pytest.raises(ValueError, match="method"):
        embed_2d(x, method="pca")


def test_feature_space_png_and_data(tmp_path):
    ev, labels = _clusters(n_per=8, dim=10, seed=1)
    tg, _ = _clusters(n_per=8, dim=6, seed=2)
    aligned = tg + 0.01
    raw = before_after_panels(ev, tg, aligned, normalize=False)
    assert raw["before alignment"]["event"].shape == (24, 6)  # PCA to min(De, Dt)
    np.testing.assert_array_equal(raw["after alignment"]["event"], aligned)
    panels = before_after_panels(ev, tg, aligned)
    np.testing.assert_allclose(panels["after alignment"]["event"],
                               aligned / np.linalg.norm(aligned, axis=1, keepdims=True))
    np.testing.assert_allclose(np.linalg.norm(panels["after alignment"]["target"], axis=1), 1.0)
    scenes = [f"scene{c}" for c in labels]
    path = plot_feature_space(panels, tmp_path / "tsne.png", scenes=scenes, method="tsne")
    _assert_png(path)
    data = json.loads(data_path(path).read_text())
    assert data["method"] == "tsne" and set(data["panels"]) == {"before alignment", "after alignment"}
    for entry in data["panels"].values():
        assert len(entry["points"]) == 48 and all(len(p) == 2 for p in entry["points"])
        assert entry["modality"] == ["event"] * 24 + ["target"] * 24
        assert entry["scene"] == scenes * 2
    with pytest.raises(ValueError, match="expected the target width"):
        before_after_panels(ev, tg, ev)
    with pytest.raises(ValueError, match="scenes has 3 labels"):
        plot_feature_space(panels, tmp_path / "x.png", scenes=["a", "b", "c"])


def test_umap_optional(tmp_path):
    x, _ = _clusters(n_per=6)
    try:
        import umap  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="umap-learn"):
            embed_2d(x, method="umap")
        pytest.skip("umap-learn is not installed (optional extra 'umap'); the missing-library message was checked")
    assert embed_2d(x, method="umap").shape == (len(x), 2)
