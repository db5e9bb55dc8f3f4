"""Metrics against independent references: brute-force python loops in float64, closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from modeling_evalign.evaluation import metrics
from modeling_evalign.evaluation.metrics import (
    TimeWindows,
    bidirectional_recall,
    cosine_similarity,
    load_metric,
    mse,
    retrieval_ranks,
    retrieval_recall,
)


def brute_ranks(query: np.ndarray, gallery: np.ndarray, groups=None, windows=None) -> list[int]:
    """Per-pair python loop in float64: the module docstring's rule written out literally."""
    q = query.astype(np.float64)
    g = gallery.astype(np.float64)
    n = len(q)

    def cos(a, b):
        na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(x * x for x in b))
        if na == 0 or nb == 0:
            return 0.0
        return sum(x * y for x, y in zip(a, b)) / (na * nb)

    if windows is not None:
        seq, t0, t1 = windows

        def positive(i, j):
            return seq[i] == seq[j] and t0[j] < t1[i] and t0[i] < t1[j]
    elif groups is not None:

        def positive(i, j):
            return groups[i] == groups[j]

    ranks = []
    for i in range(n):
        scores = [cos(q[i], g[j]) for j in range(n)]
        if groups is None and windows is None:
            ranks.append(sum(1 for j in range(n) if j != i and scores[j] >= scores[i]))
        else:
            best = max(scores[j] for j in range(n) if positive(i, j))
            ranks.append(sum(1 for j in range(n) if not positive(i, j) and scores[j] >= best))
    return ranks


def brute_recall(query, gallery, ks, groups=None):
    ranks = brute_ranks(query, gallery, groups)
    return {f"R@{k}": sum(r < k for r in ranks) / len(ranks) for k in ks}


def test_recall_matches_brute_force_loop():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(40, 6)).astype(np.float32)
    g = (q + rng.normal(scale=1.0, size=q.shape)).astype(np.float32)
    ks = (1, 3, 5, 10)
    got = retrieval_recall(q, g, ks=ks)
    want = brute_recall(q, g, ks)
    assert got == pytest.approx(want, abs=0)
    assert 0 < got["R@1"] < 1  # not a degenerate case
    assert retrieval_ranks(q, g).tolist() == brute_ranks(q, g)


def test_exact_ties_count_pessimistically():
    # integer vectors: all cosines exact in float32; duplicates create exact ties with the positive
    q = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], dtype=np.float32)
    g = np.array([[1, 0, 0], [1, 0, 0], [0, 0, 1], [2, 2, 0]], dtype=np.float32)
    # query 0: gallery 1 ties with its positive -> rank 1; query 1: positive scores 0 (=ties with 0 and 2) and
    # gallery 3 scores higher; query 2: only itself scores 1 -> rank 0; query 3: ties nobody above 1 -> rank 0
    assert brute_ranks(q, g) == [1, 3, 0, 0]
    assert retrieval_ranks(q, g).tolist() == [1, 3, 0, 0]
    assert retrieval_recall(q, g, ks=(1, 2, 4)) == {"R@1": 0.5, "R@2": 0.75, "R@4": 1.0}


def test_collapsed_model_gets_zero_recall_at_1():
    q = np.ones((8, 4), dtype=np.float32)  # every query identical: all scores tie
    g = np.random.default_rng(1).normal(size=(8, 4)).astype(np.float32)
    assert retrieval_recall(q, g, ks=(1,))["R@1"] < 1.0
    assert retrieval_recall(g, np.ones((8, 4), np.float32), ks=(1, 8)) == {"R@1": 0.0, "R@8": 1.0}


def test_zero_rows_tie_with_everything():
    q = np.array([[0, 0], [0, 1], [1, 0]], dtype=np.float32)
    g = np.array([[1, 0], [0, 1], [1, 0]], dtype=np.float32)
    assert retrieval_ranks(q, g).tolist() == brute_ranks(q, g) == [2, 0, 1]


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64, None])
def test_chunked_equals_unchunked_and_groups_match_loop(chunk_size):
    rng = np.random.default_rng(2)
    base = rng.normal(size=(10, 5))
    q = np.repeat(base, 3, axis=0)[:29].astype(np.float32)  # duplicates -> ties across chunk borders
    g = (q + rng.normal(scale=0.8, size=q.shape)).astype(np.float32)
    g[5] = g[4]
    full = retrieval_ranks(q, g, chunk_size=len(q))
    assert retrieval_ranks(q, g, chunk_size=chunk_size).tolist() == full.tolist() == brute_ranks(q, g)
    groups = [i // 3 for i in range(len(q))]
    got = retrieval_ranks(q, g, chunk_size=chunk_size, positive_groups=groups).tolist()
    assert got == brute_ranks(q, g, groups)


def test_chunking_never_allocates_n_by_n(monkeypatch):
    shapes = []
    real_matmul, real_empty = torch.matmul, torch.empty

    def spy(a, b, **kwargs):
        out = real_matmul(a, b, **kwargs)
        shapes.append(tuple(out.shape))
        return out

    def spy_empty(*size, **kwargs):
        shapes.append(tuple(size))
        return real_empty(*size, **kwargs)

    monkeypatch.setattr(torch, "matmul", spy)
    monkeypatch.setattr(torch, "empty", spy_empty)
    q = torch.randn(50, 4)
    retrieval_ranks(q, q + 0.1, chunk_size=8)
    matrices = [s for s in shapes if len(s) == 2]
    assert matrices and max(s[0] for s in matrices) == 8 and all(s[1] == 50 for s in matrices)
    # the automatic chunk keeps a block near _BLOCK_ELEMENTS
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 100)
    shapes.clear()
    retrieval_ranks(q, q)
    assert max(s[0] for s in shapes if len(s) == 2) == 2


def test_positive_groups_string_labels_and_rule():
    # two windows of one sequence are near-duplicates: with groups, retrieving the neighbour counts as a hit
    q = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0]], dtype=np.float32)
    g = np.array([[0.98, 0.12], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    assert retrieval_recall(q, g, ks=(1,))["R@1"] == pytest.approx(1 / 3)
    labels = ["seq_a", "seq_a", "seq_b"]
    assert retrieval_recall(q, g, ks=(1,), positive_groups=labels)["R@1"] == 1.0
    assert retrieval_ranks(q, g, positive_groups=np.array(labels)).tolist() == brute_ranks(q, g, labels)


def test_bidirectional_keys_and_values():
    rng = np.random.default_rng(3)
    e = rng.normal(size=(30, 8)).astype(np.float32)
    t = (e @ rng.normal(size=(8, 8)) * 0.3 + e).astype(np.float32)
    out = bidirectional_recall(torch.from_numpy(e), t, ks=(1, 5))
    assert set(out) == {"e2t/R@1", "e2t/R@5", "t2e/R@1", "t2e/R@5", "mean/R@1", "mean/R@5"}
    assert out["e2t/R@1"] == brute_recall(e, t, (1,))["R@1"]
    assert out["t2e/R@5"] == brute_recall(t, e, (5,))["R@5"]
    assert out["mean/R@1"] == pytest.approx((out["e2t/R@1"] + out["t2e/R@1"]) / 2)


def test_mse_and_cosine_against_float64():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(20, 7))
    b = rng.normal(size=(20, 7))
    assert mse(a.astype(np.float32), torch.tensor(b, dtype=torch.float32)) == pytest.approx(((a - b) ** 2).mean(), rel=1e-5)
    want = np.mean([(x @ y) / np.linalg.norm(x) / np.linalg.norm(y) for x, y in zip(a, b)])
    assert cosine_similarity(a, b) == pytest.approx(want, abs=1e-6)
    assert cosine_similarity(a, 3 * a) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(
    ("a", "b", "exc", "match"),
    [
        (np.zeros((3, 4)), np.zeros((3, 5)), ValueError, r"shape \(3, 4\).*\(3, 5\)"),
        (np.zeros((3, 4)), np.zeros((2, 4)), ValueError, "same"),
        (np.zeros(4), np.zeros(4), ValueError, r"expected \[N, D\]"),
        (np.zeros((0, 4)), np.zeros((0, 4)), ValueError, "at least one row"),
        ("abc", np.zeros((3, 4)), TypeError, "numpy array or torch tensor"),
        (np.array([[1.0, np.nan], [0, 1]]), np.ones((2, 2)), ValueError, "NaN or inf.*row 0"),
        (np.ones((2, 2)), np.array([[1.0, 1], [np.inf, 1]]), ValueError, "gallery contains NaN or inf.*row 1"),
    ],
)
def test_bad_inputs_raise(a, b, exc, match):
    with pytest.raises(exc, match=match):
        retrieval_recall(a, b)


def test_bad_options_raise():
    x = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="ks"):
        retrieval_recall(x, x, ks=(0,))
    with pytest.raises(ValueError, match="chunk_size"):
        retrieval_recall(x, x, chunk_size=0)
    with pytest.raises(ValueError, match="positive_groups"):
        retrieval_recall(x, x, positive_groups=[0, 1])
    with pytest.raises(KeyError, match="unknown evalign metric"):
        load_metric("bleu")


def test_evaluate_modules_match_metrics_offline(monkeypatch):
    import os

    assert os.environ["HF_EVALUATE_OFFLINE"] == "1" and os.environ["HF_HUB_OFFLINE"] == "1"
    import socket

    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    rng = np.random.default_rng(5)
    e = rng.normal(size=(25, 6)).astype(np.float32)
    t = (e + rng.normal(scale=0.7, size=e.shape)).astype(np.float32)
    groups = [i // 2 for i in range(25)]
    retrieval = load_metric("retrieval")
    got = retrieval.compute(predictions=e, references=t, ks=[1, 5], positive_groups=groups)
    assert got == pytest.approx(bidirectional_recall(e, t, ks=(1, 5), positive_groups=groups), abs=0)
    assert 0 < got["e2t/R@1"] < 1
    windows = {"sequence": [i // 10 for i in range(25)], "start": list(range(25)), "end": [i + 1.5 for i in range(25)]}
    got = retrieval.compute(predictions=e, references=t, ks=[1], positive_windows=windows)
    assert got == bidirectional_recall(e, t, ks=(1,), positive_windows=TimeWindows(**windows))
    # incremental add_batch gives the same as one compute
    m = load_metric("mse")
    for i in range(0, 25, 10):
        m.add_batch(predictions=e[i : i + 10], references=t[i : i + 10])
    assert m.compute()["mse"] == pytest.approx(mse(e, t), rel=1e-6)
    assert load_metric("evalign_cosine").compute(predictions=e, references=t)["cosine_similarity"] == pytest.approx(
        cosine_similarity(e, t), rel=1e-6
    )


def test_wheel_package_data_ships_metric_scripts():
    import fnmatch
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # python >= 3.11

    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["modeling_evalign"]
    for name in metrics.HF_METRICS:
        script = metrics.metric_path(name).relative_to(root / "modeling_evalign") / f"evalign_{name}.py"
        assert any(fnmatch.fnmatch(str(script), g) for g in globs), f"{script} not matched by {globs}"


@pytest.mark.parametrize("chunk_size", [2, None])
def test_overlapping_window_positives_match_loop(chunk_size):
    rng = np.random.default_rng(6)
    n = 24
    # two sequences of 1 s windows at 0.5 s stride: i overlaps i+-1 of its sequence, not i+-2
    seq = ["a"] * 14 + ["b"] * 10
    start = [0.5e6 * (i if i < 14 else i - 14) for i in range(n)]
    end = [s + 1e6 for s in start]
    drift = np.cumsum(rng.normal(scale=0.6, size=(n, 6)), axis=0)  # neighbours look alike
    q = drift.astype(np.float32)
    g = (drift + rng.normal(scale=0.5, size=drift.shape)).astype(np.float32)
    windows = TimeWindows(seq, start, end)
    got = retrieval_ranks(q, g, chunk_size=chunk_size, positive_windows=windows).tolist()
    assert got == brute_ranks(q, g, windows=(seq, start, end))
    plain = retrieval_ranks(q, g).tolist()
    assert all(w <= p for w, p in zip(got, plain)) and got != plain
    samples = [{"sequence": a, "window_start_us": b, "window_end_us": c} for a, b, c in zip(seq, start, end)]
    from_meta = bidirectional_recall(q, g, positive_windows=TimeWindows.from_samples(samples))
    assert from_meta == bidirectional_recall(q, g, positive_windows=windows)


def test_time_windows_validation():
    x = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match=r"row 1 has start 5.0 >= end 5.0"):
        retrieval_ranks(x, x, positive_windows=TimeWindows(["a"] * 3, [0, 5, 6], [1, 5, 7]))
    with pytest.raises(ValueError, match=r"positive_windows.end has shape \(2,\)"):
        retrieval_ranks(x, x, positive_windows=TimeWindows(["a"] * 3, [0, 1, 2], [1, 2]))
    with pytest.raises(ValueError, match="not both"):
        retrieval_ranks(x, x, positive_groups=[0, 1, 2], positive_windows=TimeWindows("abc", [0, 1, 2], [1, 2, 3]))
    with pytest.raises(KeyError, match="window_end_us"):
        TimeWindows.from_samples([{"sequence": "a", "window_start_us": 0}])
