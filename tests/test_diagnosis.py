"""Diagnostics against closed forms, float64 loops and an independent (Gram-matrix) CKA."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from modeling_evalign.evaluation.diagnosis import (
    alignment,
    cosine_similarity_stats,
    diagnose,
    linear_cka,
    modality_gap,
    nearest_neighbour_confusion,
    per_dimension_stats,
    uniformity,
)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _gram_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA from centred Gram matrices: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), H = I - 11^T / n."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return float(np.sum(k * l_) / math.sqrt(np.sum(k * k) * np.sum(l_ * l_)))


def test_identical_features_gap_zero_cka_one_alignment_zero():
    x = _randn(30, 12)
    assert modality_gap(x, x) == pytest.approx(0.0, abs=1e-12)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert alignment(x, x) == pytest.approx(0.0, abs=1e-12)
    stats = cosine_similarity_stats(x, x)
    assert stats.positive_mean == pytest.approx(1.0) and stats.positive_std == pytest.approx(0.0, abs=1e-7)


def test_cka_invariances_and_gram_reference():
    x = _randn(25, 10, seed=1)
    q, _ = torch.linalg.qr(_randn(10, 10, seed=2))
    assert linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-10)  # orthogonal rotation
    assert linear_cka(x, 3.7 * x + 5.0) == pytest.approx(1.0, abs=1e-10)  # isotropic scale + shift
    y = torch.cat([x[:, :4] @ _randn(4, 6, seed=3), _randn(25, 3, seed=4)], dim=1)  # other width
    assert linear_cka(x, y) == pytest.approx(_gram_cka(x.numpy(), y.numpy()), rel=1e-10)
    assert linear_cka(x, y) < 0.95
    anisotropic = x * torch.linspace(0.1, 3.0, 10, dtype=torch.float64)
    assert linear_cka(x, anisotropic) < 0.99  # not invariant to per-dimension scaling
    with pytest.raises(ValueError, match="paired rows"):
        linear_cka(x, y[:20])
    with pytest.raises(ValueError, match="constant"):
        linear_cka(torch.ones(5, 3), x[:5])


def test_known_centroid_shift():
    phi = 0.6
    angles = torch.tensor([phi, -phi] * 8, dtype=torch.float64)
    event = torch.stack([torch.cos(angles), torch.sin(angles), torch.zeros(16, dtype=torch.float64)], 1)
    target = event * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)  # centroid (-cos phi, 0, 0)
    scales = torch.rand(16, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.5
    assert modality_gap(event * scales, target) == pytest.approx(2 * math.cos(phi), rel=1e-12)


def test_alignment_against_loop():
    x, y = _randn(9, 5, seed=5), _randn(9, 5, seed=6)
    for alpha in (1.0, 2.0, 3.0):
        expected = np.mean([
            np.linalg.norm(x[i].numpy() / np.linalg.norm(x[i].numpy()) - y[i].numpy() / np.linalg.norm(y[i].numpy()))
            ** alpha for i in range(9)
        ])
        assert alignment(x, y, alpha=alpha) == pytest.approx(expected, rel=1e-12)
    raw = np.mean([np.sum((x[i].numpy() - y[i].numpy()) ** 2) for i in range(9)])
    assert alignment(x, y, normalize=False) == pytest.approx(raw, rel=1e-12)


@pytest.mark.parametrize("chunk_size", [1, 2, 1024])
def test_uniformity_against_float64_loop(chunk_size):
    x = _randn(7, 4, seed=7)
    unit = [v / np.linalg.norm(v) for v in x.numpy()]
    terms = [math.exp(-2.0 * np.sum((unit[i] - unit[j]) ** 2)) for i in range(7) for j in range(i + 1, 7)]
    assert uniformity(x, t=2.0, chunk_size=chunk_size) == pytest.approx(math.log(np.mean(terms)), rel=1e-12)
    terms_t1 = [math.exp(-np.sum((x[i].numpy() - x[j].numpy()) ** 2)) for i in range(7) for j in range(i + 1, 7)]
    got = uniformity(x, t=1.0, normalize=False, chunk_size=chunk_size)
    assert got == pytest.approx(math.log(np.mean(terms_t1)), rel=1e-9)


def test_cosine_stats_against_full_matrix():
    e, t = _randn(30, 8, seed=8), _randn(30, 8, seed=9)
    e[:10] += 2 * t[:10]
    en = e.numpy() / np.linalg.norm(e.numpy(), axis=1, keepdims=True)
    tn = t.numpy() / np.linalg.norm(t.numpy(), axis=1, keepdims=True)
    full = en @ tn.T
    pos, neg = np.diag(full), full[~np.eye(30, dtype=bool)]
    stats = cosine_similarity_stats(e, t, num_bins=20, chunk_size=7)
    assert stats.positive_mean == pytest.approx(pos.mean()) and stats.positive_std == pytest.approx(pos.std())
    assert stats.negative_mean == pytest.approx(neg.mean()) and stats.negative_std == pytest.approx(neg.std())
    for q in (5, 25, 50, 75, 95):
        assert stats.positive_percentiles[f"p{q}"] == pytest.approx(np.percentile(pos, q), abs=1e-9)
        assert stats.negative_percentiles[f"p{q}"] == pytest.approx(np.percentile(neg, q), abs=0.02)
    assert stats.negative_histogram == np.histogram(neg, bins=20, range=(-1, 1))[0].tolist()
    assert stats.positive_histogram == np.histogram(pos, bins=20, range=(-1, 1))[0].tolist()
    assert len(stats.histogram_edges) == 21


def test_nearest_neighbour_confusion_with_swaps_and_labels():
    t = _randn(12, 6, seed=10)
    e = t.clone()
    e[[0, 1]] = t[[1, 0]]  # events 0 and 1 point at each other's targets
    e[5] = t[9]  # event 5 points at target 9
    labels = ["a"] * 6 + ["b"] * 6
    result = nearest_neighbour_confusion(e, t, labels=labels, chunk_size=5)
    assert result.error_rate == pytest.approx(3 / 12)
    assert result.label_error_rate == pytest.approx(1 / 12)  # only event 5 (a) lands on b
    assert result.labels == ["a", "b"] and result.confusion == [[5, 1], [0, 6]]
    assert nearest_neighbour_confusion(e, t).label_error_rate is None
    with pytest.raises(ValueError, match="labels has 3 entries"):
        nearest_neighbour_confusion(e, t, labels=["a", "b", "c"])


def test_per_dimension_stats_and_dead_dims():
    x = _randn(20, 6, seed=11)
    x[:, 2] = 4.0
    x[:, 4] = 0.0
    stats = per_dimension_stats(x)
    assert stats.dead_dims == [2, 4]
    np.testing.assert_allclose(stats.mean, x.numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.std, x.numpy().std(0), rtol=1e-12, atol=1e-15)


def test_diagnose_report_json_and_format(tmp_path):
    t = _randn(16, 8, seed=12)
    e = t + 0.1 * _randn(16, 8, seed=13)
    report = diagnose(e.float(), t.numpy(), labels=[i % 2 for i in range(16)], chunk_size=5)
    assert report.linear_cka == pytest.approx(linear_cka(e, t))
    assert report.uniformity_target == pytest.approx(uniformity(t))
    path = tmp_path / "out" / "diagnosis.json"
    report.to_json(path)
    assert json.loads(path.read_text()) == json.loads(json.dumps(report.to_dict()))
    assert [p.name for p in path.parent.iterdir()] == ["diagnosis.json"]  # no temporary file left
    text = report.format()
    assert f"{report.modality_gap:.4f}" in text and "nearest target has another label" in text
    assert "acceptance" not in text.lower()


def test_bad_inputs_raise():
    x = _randn(10, 4)
    with pytest.raises(ValueError, match=r"event \(10, 4\) and target \(10, 5\)"):
        diagnose(x, _randn(10, 5))
    with pytest.raises(ValueError, match="pool them first"):
        modality_gap(x[None].repeat(2, 1, 1), x[None].repeat(2, 1, 1))
    with pytest.raises(TypeError, match="floating-point"):
        alignment(torch.ones(4, 3, dtype=torch.long), torch.ones(4, 3, dtype=torch.long))
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        uniformity(bad)
    with pytest.raises(TypeError, match="features must be"):
        uniformity([[1.0, 2.0]])
    with pytest.raises(ValueError, match="chunk_size"):
        uniformity(x, chunk_size=0)
