"""Alignment metrics: MSE, cosine similarity and cross-modal retrieval recall.

All functions accept numpy arrays or torch tensors of shape ``[N, D]`` (row ``i`` of one input is
paired with row ``i`` of the other) and compute in float32 on the tensors' device (CPU for numpy).

Retrieval rule (used by :func:`retrieval_ranks`, :func:`retrieval_recall`, :func:`bidirectional_recall`):

* similarity is the cosine similarity (rows are L2-normalised; an all-zero row scores 0 against
  everything, which makes it tie with everything and therefore rank last under the tie rule);
* query ``i``'s positive is gallery row ``i``;
* rank of the positive = number of OTHER gallery rows scoring ``>=`` the positive's score
  (pessimistic ties: a tie is counted against the query, so a model that maps everything to one
  vector gets R@K = 0, never 1), and ``R@K`` = fraction of queries with ``rank < K``;
* with ``positive_groups`` (one label per row, e.g. a sequence id or a cluster of overlapping time
  windows), every gallery row whose label equals the query's label is an acceptable positive: the
  positive score is the BEST score among them, and the rank counts only rows of OTHER groups scoring
  ``>=`` it. So R@K is "at least one same-group row is among the top K once same-group rows are
  skipped", which is what overlapping consecutive windows need;
* with ``positive_windows`` (a :class:`TimeWindows`: sequence label, start and end time per row),
  every gallery row of the SAME sequence whose window OVERLAPS the query's window
  (``start_j < end_i`` and ``start_i < end_j``) is an acceptable positive, with the same best-positive
  and other-rows-only counting. Unlike groups this relation is not transitive: windows ``i`` and
  ``i+2`` of a sliding 1 s window at 0.5 s stride are not positives of each other. Rows that are
  neither the query's positives nor its pair are counted as negatives.

Precision: scores are float32 dot products of unit vectors, absolute error about ``1e-7 * sqrt(D)``;
two gallery rows whose true cosines differ by less than that may be ordered as ties. Exact ties
(duplicate rows) are exact in float32 too, because every score of one query row comes from the same
matrix product.

Memory: queries are processed in blocks of ``chunk_size`` rows, so at most ``chunk_size x N`` scores
exist at a time (never ``N x N`` when ``N > chunk_size``); the default keeps a block near 128 MiB.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# Default score-block budget in elements (float32): 2**25 elements = 128 MiB per block.
_BLOCK_ELEMENTS = 2**25

#: Metric names accepted by :func:`load_metric` -> local ``evaluate`` module directory.
HF_METRICS = {
    "retrieval": "evalign_retrieval",
    "mse": "evalign_mse",
    "cosine": "evalign_cosine",
}


def _as_matrix(x: Any, name: str, *, check_finite: bool = True) -> torch.Tensor:
    """Convert ``x`` (numpy array, torch tensor or nested list) to a float32 ``[N, D]`` tensor."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    elif isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, (list, tuple)):
        t = torch.as_tensor(np.asarray(x, dtype=np.float32))
    else:
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {t.dtype}")
    if t.dim() != 2:
        raise ValueError(f"{name} has shape {tuple(t.shape)}: expected [N, D]")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} has shape {tuple(t.shape)}: expected at least one row and one column")
    t = t.to(torch.float32)
    if check_finite:
        bad = ~torch.isfinite(t).all(dim=1)
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            raise ValueError(f"{name} contains NaN or inf (first bad row {row})")
    return t


def _pair(a: Any, b: Any, names: tuple[str, str]) -> tuple[torch.Tensor, torch.Tensor]:
    ta, tb = _as_matrix(a, names[0]), _as_matrix(b, names[1])
    if ta.shape != tb.shape:
        raise ValueError(
            f"{names[0]} has shape {tuple(ta.shape)} and {names[1]} has shape {tuple(tb.shape)}: "
            "expected the same [N, D]"
        )
    return ta, tb.to(ta.device)


def mse(pred: Any, target: Any) -> float:
    """Mean squared error over all elements of two ``[N, D]`` arrays."""
    p, t = _pair(pred, target, ("pred", "target"))
    return float(torch.mean((p - t) ** 2))


def cosine_similarity(a: Any, b: Any) -> float:
    """Mean over rows of the cosine similarity between ``a[i]`` and ``b[i]`` (``[N, D]`` each).

    Zero rows have norm clamped to ``1e-8`` (cosine 0 against anything).
    """
    ta, tb = _pair(a, b, ("a", "b"))
    return float(F.cosine_similarity(ta, tb, dim=1, eps=1e-8).mean())


@dataclass(frozen=True)
class TimeWindows:
    """Per-row time windows for overlap positives: ``sequence`` labels and ``start``/``end`` times.

    Times in any one unit (DSEC metadata: ``window_start_us``/``window_end_us``); ``start < end``.
    """

    sequence: Sequence[Any] | np.ndarray
    start: Sequence[float] | np.ndarray
    end: Sequence[float] | np.ndarray

    @classmethod
    def from_samples(
        cls,
        samples: Sequence[dict[str, Any]],
        sequence_key: str = "sequence",
        start_key: str = "window_start_us",
        end_key: str = "window_end_us",
    ) -> TimeWindows:
        """From per-sample metadata dicts (``AlignmentDataset.samples_list()``)."""
        for key in (sequence_key, start_key, end_key):
            missing = [i for i, sample in enumerate(samples) if key not in sample]
            if missing:
                raise KeyError(f"per-sample metadata lacks {key!r} (first at sample {missing[0]})")
        return cls(
            [sample[sequence_key] for sample in samples],
            [sample[start_key] for sample in samples],
            [sample[end_key] for sample in samples],
        )

    def tensors(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(sequence ids int64, start float64, end float64)``, each ``[n]``, validated."""
        seq = _group_ids(self.sequence, n, "positive_windows.sequence")
        times = []
        for name in ("start", "end"):
            arr = np.asarray(getattr(self, name), dtype=np.float64)
            if arr.shape != (n,):
                raise ValueError(f"positive_windows.{name} has shape {arr.shape}: expected ({n},)")
            if not np.isfinite(arr).all():
                raise ValueError(f"positive_windows.{name} contains NaN or inf")
            times.append(torch.from_numpy(arr))
        bad = (times[0] >= times[1]).nonzero()
        if len(bad):
            i = int(bad[0, 0])
            raise ValueError(f"positive_windows row {i} has start {float(times[0][i])} >= end {float(times[1][i])}")
        return seq, times[0], times[1]


def _group_ids(positive_groups: Any, n: int, name: str = "positive_groups") -> torch.Tensor:
    """Map arbitrary hashable labels (ints, strings) to int64 ids, validating the length."""
    if isinstance(positive_groups, torch.Tensor):
        positive_groups = positive_groups.detach().cpu().numpy()
    labels = np.asarray(positive_groups)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"{name} has shape {labels.shape}: expected one label per row, ({n},)")
    _, ids = np.unique(labels, return_inverse=True)
    return torch.from_numpy(ids.astype(np.int64).reshape(-1))


def _check_chunk_size(chunk_size: int | None, n: int) -> int:
    if chunk_size is None:
        return max(1, _BLOCK_ELEMENTS // n)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    return chunk_size


def _count(mask: torch.Tensor) -> torch.Tensor:
    """Row-wise number of True values; summing the uint8 view in int32 is ~1.5x faster than bool.sum()."""
    return mask.view(torch.uint8).sum(dim=1, dtype=torch.int32).to(torch.int64)


def retrieval_ranks(
    query: Any,
    gallery: Any,
    *,
    chunk_size: int | None = None,
    positive_groups: Sequence[Any] | np.ndarray | torch.Tensor | None = None,
    positive_windows: TimeWindows | None = None,
) -> torch.Tensor:
    """Rank of each query's positive in the gallery (0 = retrieved first), by the module's rule.

    Args:
        query: ``[N, D]`` query features.
        gallery: ``[N, D]`` gallery features; row ``i`` is query ``i``'s positive.
        chunk_size: query rows scored per block (default: about 128 MiB of scores per block).
        positive_groups: optional ``N`` labels; rows sharing the query's label are all positives.
        positive_windows: optional :class:`TimeWindows`; same-sequence overlapping windows are positives.

    Returns:
        int64 tensor ``[N]`` on the CPU.
    """
    q, g = _pair(query, gallery, ("query", "gallery"))
    n = q.shape[0]
    step = _check_chunk_size(chunk_size, n)
    if positive_groups is not None and positive_windows is not None:
        raise ValueError("pass positive_groups or positive_windows, not both")
    groups = None if positive_groups is None else _group_ids(positive_groups, n).to(q.device)
    windows = None
    if positive_windows is not None:
        if not isinstance(positive_windows, TimeWindows):
            raise TypeError(f"positive_windows must be a TimeWindows, got {type(positive_windows).__name__}")
        windows = tuple(t.to(q.device) for t in positive_windows.tensors(n))
    q = F.normalize(q, dim=1, eps=1e-12)
    g = F.normalize(g, dim=1, eps=1e-12)
    gt = g.t()  # a transposed view: GEMM reads it directly, no N x D copy
    ranks = torch.empty(n, dtype=torch.int64)
    # blocks reuse two buffers: fresh 100 MB allocations per block cost page faults (~25% of the time)
    score_buf = torch.empty(min(step, n), n, device=q.device)
    mask_buf = torch.empty(min(step, n), n, dtype=torch.bool, device=q.device)
    for start in range(0, n, step):
        stop = min(n, start + step)
        scores, mask = score_buf[: stop - start], mask_buf[: stop - start]
        torch.matmul(q[start:stop], gt, out=scores)  # [c, N]
        rows = torch.arange(stop - start, device=q.device)
        if groups is None and windows is None:
            positive = scores[rows, rows + start]
            torch.ge(scores, positive[:, None], out=mask)
            rank = _count(mask) - 1  # the positive itself always satisfies >=
        else:
            if groups is not None:
                same = groups[start:stop, None] == groups[None, :]
            else:
                seq, t0, t1 = windows
                same = (seq[start:stop, None] == seq[None, :]) & (t0[None, :] < t1[start:stop, None])
                same &= t0[start:stop, None] < t1[None, :]
            positive = scores.masked_fill(~same, -math.inf).amax(dim=1)
            torch.ge(scores, positive[:, None], out=mask)
            rank = _count(mask.logical_and_(~same))
        ranks[start:stop] = rank.cpu()
    return ranks


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    ks = tuple(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive ints, got {ks!r}")
    return ks


def recall_from_ranks(ranks: torch.Tensor, ks: Iterable[int] = (1, 5, 10)) -> dict[str, float]:
    """``{"R@k": fraction of ranks < k}`` for each ``k`` in ``ks``."""
    ks = _check_ks(ks)
    return {f"R@{k}": float((ranks < k).double().mean()) for k in ks}


def retrieval_recall(
    query: Any,
    gallery: Any,
    ks: Iterable[int] = (1, 5, 10),
    chunk_size: int | None = None,
    positive_groups: Sequence[Any] | np.ndarray | torch.Tensor | None = None,
    positive_windows: TimeWindows | None = None,
) -> dict[str, float]:
    """Recall at K of ``query -> gallery`` retrieval: ``{"R@1": ..., "R@5": ..., "R@10": ...}``.

    Values are fractions in ``[0, 1]``. See the module docstring for the rank and tie rule and for
    ``positive_groups`` / ``positive_windows``.
    """
    ks = _check_ks(ks)
    ranks = retrieval_ranks(
        query, gallery, chunk_size=chunk_size, positive_groups=positive_groups, positive_windows=positive_windows
    )
    return recall_from_ranks(ranks, ks)


def bidirectional_recall(
    event_features: Any,
    target_features: Any,
    ks: Iterable[int] = (1, 5, 10),
    chunk_size: int | None = None,
    positive_groups: Sequence[Any] | np.ndarray | torch.Tensor | None = None,
    positive_windows: TimeWindows | None = None,
) -> dict[str, float]:
    """Recall at K in both directions between aligned event features and target features.

    Keys: ``"e2t/R@k"`` (event queries, target gallery) and ``"t2e/R@k"`` (target queries, event
    gallery) for each ``k``, plus ``"mean/R@k"``, their average.
    """
    ks = _check_ks(ks)
    e2t = retrieval_recall(event_features, target_features, ks, chunk_size, positive_groups, positive_windows)
    t2e = retrieval_recall(target_features, event_features, ks, chunk_size, positive_groups, positive_windows)
    out = {f"e2t/{k}": v for k, v in e2t.items()}
    out.update({f"t2e/{k}": v for k, v in t2e.items()})
    out.update({f"mean/{k}": (e2t[k] + t2e[k]) / 2 for k in e2t})
    return out


def metric_path(name: str) -> Path:
    """Directory of the local ``evaluate`` module for ``name`` (one of :data:`HF_METRICS`)."""
    key = name.removeprefix("evalign_")
    if key not in HF_METRICS:
        raise KeyError(f"unknown evalign metric {name!r}: expected one of {sorted(HF_METRICS)}")
    path = Path(__file__).resolve().parent / "metrics_hf" / HF_METRICS[key]
    if not (path / f"{HF_METRICS[key]}.py").is_file():
        raise FileNotFoundError(f"metric script {path / HF_METRICS[key]}.py is missing from the installation")
    return path


def load_metric(name: str, **kwargs: Any):
    """``evaluate.load`` of a bundled metric (``"retrieval"``, ``"mse"``, ``"cosine"``); no network needed."""
    import evaluate

    return evaluate.load(str(metric_path(name)), **kwargs)
