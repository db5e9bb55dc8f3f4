"""Diagnostics of how well event features sit in a target (RGB/CLIP) feature space.

Each number is a standard, independently defined measurement; none is derived from another by a
made-up formula. In particular nothing here predicts a speculative-decoding acceptance rate (the
brief's "acceptance = f(cosine)" heuristic is gone): acceptance is measured by running the
draft/verify loop, see :mod:`modeling_evalign.evaluation.speculative`.

Inputs are paired features ``event[i] <-> target[i]``, ``[N, D]`` each (pool token features first,
e.g. ``x.mean(1)``). Everything N x N (uniformity, cosine negatives, nearest neighbours) is computed
in row chunks of ``chunk_size`` so memory stays ``O(chunk_size * N)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "CosineStats",
    "DiagnosisReport",
    "DimensionStats",
    "NeighbourConfusion",
    "alignment",
    "cosine_similarity_stats",
    "diagnose",
    "linear_cka",
    "modality_gap",
    "nearest_neighbour_confusion",
    "per_dimension_stats",
    "uniformity",
]

PERCENTILES = (5, 25, 50, 75, 95)


def _as_features(x: Any, name: str) -> torch.Tensor:
    """Return ``x`` as a float64 ``[N, D]`` tensor or raise naming ``name``."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        hint = " (token features: pool them first, e.g. x.mean(1))" if x.dim() == 3 else ""
        raise ValueError(f"{name} has shape {tuple(x.shape)}: expected [N, D] with N >= 2{hint}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} has dtype {x.dtype}: expected a floating-point tensor")
    x = x.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _paired(event: Any, target: Any) -> tuple[torch.Tensor, torch.Tensor]:
    e, t = _as_features(event, "event"), _as_features(target, "target")
    if e.shape != t.shape:
        raise ValueError(
            f"event {tuple(e.shape)} and target {tuple(t.shape)} must be paired features of one space [N, D] "
            "(for spaces of different widths use linear_cka)"
        )
    return e, t


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


def _check_chunk(chunk_size: int) -> None:
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} is invalid: expected an integer >= 1")


def modality_gap(event: Any, target: Any) -> float:
    """Euclidean distance between the centroids of the L2-normalised event and target features (Liang et al. 2022)."""
    e, t = _paired(event, target)
    return float((_normalize(e).mean(0) - _normalize(t).mean(0)).norm())


def alignment(event: Any, target: Any, alpha: float = 2.0, normalize: bool = True) -> float:
    """Wang & Isola (2020) alignment: ``E_i ||f(x_i) - g(y_i)||^alpha`` over positive pairs (lower is better).

    Features are L2-normalised first (the paper's hypersphere) unless ``normalize=False``.
    """
    if alpha <= 0:
        raise ValueError(f"alpha={alpha} is invalid: expected a value > 0")
    e, t = _paired(event, target)
    if normalize:
        e, t = _normalize(e), _normalize(t)
    return float((e - t).norm(dim=1).pow(alpha).mean())


def uniformity(features: Any, t: float = 2.0, normalize: bool = True, chunk_size: int = 1024) -> float:
    """Wang & Isola (2020) uniformity: ``log E_{i<j} exp(-t ||f_i - f_j||^2)`` (lower is more uniform).

    ``features``: ``[N, D]``, L2-normalised first unless ``normalize=False``. Computed with a chunked
    log-sum-exp over the N(N-1)/2 distinct pairs.
    """
    if t <= 0:
        raise ValueError(f"t={t} is invalid: expected a value > 0")
    _check_chunk(chunk_size)
    x = _as_features(features, "features")
    if normalize:
        x = _normalize(x)
    n = x.shape[0]
    sq = (x * x).sum(1)
    partial = []
    for start in range(0, n - 1, chunk_size):
        rows = x[start : start + chunk_size]
        d2 = (sq[start : start + rows.shape[0], None] + sq[None] - 2.0 * rows @ x.T).clamp_min(0.0)
        i = torch.arange(start, start + rows.shape[0])[:, None]
        upper = torch.arange(n)[None] > i
        partial.append(torch.logsumexp((-t * d2)[upper], dim=0))
    return float(torch.logsumexp(torch.stack(partial), dim=0) - math.log(n * (n - 1) / 2))


def linear_cka(x: Any, y: Any) -> float:
    """Linear CKA (Kornblith et al. 2019) of ``x [N, D1]`` and ``y [N, D2]`` with centred features.

    ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` in float64; 1 for identical features and invariant
    to orthogonal transforms and isotropic scaling. Widths may differ; N must match.
    """
    a, b = _as_features(x, "x"), _as_features(y, "y")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"x has {a.shape[0]} rows and y has {b.shape[0]}: CKA needs paired rows")
    a, b = a - a.mean(0), b - b.mean(0)
    den = torch.linalg.matrix_norm(a.T @ a) * torch.linalg.matrix_norm(b.T @ b)
    if den == 0:
        raise ValueError("linear CKA is undefined for constant features (zero variance after centring)")
    return float(torch.linalg.matrix_norm(b.T @ a) ** 2 / den)


@dataclass
class CosineStats:
    """Distribution of cosine similarities: positives ``cos(event_i, target_i)`` vs negatives (``i != j``).

    Percentiles of positives are exact; those of negatives (N(N-1) values, never materialised) are
    read off a fine histogram of ``fine_bins`` bins on [-1, 1] with linear interpolation inside a
    bin (error below 2 / fine_bins). ``histogram_edges`` has ``num_bins + 1`` entries on [-1, 1];
    the count lists have ``num_bins`` entries.
    """

    positive_mean: float
    positive_std: float
    positive_percentiles: dict[str, float]
    negative_mean: float
    negative_std: float
    negative_percentiles: dict[str, float]
    histogram_edges: list[float]
    positive_histogram: list[int]
    negative_histogram: list[int]


def _chunked_cosines(e: torch.Tensor, t: torch.Tensor, chunk_size: int):
    """Yield ``(start, cos [rows, N])`` blocks of the event x target cosine matrix."""
    en, tn = _normalize(e), _normalize(t)
    for start in range(0, en.shape[0], chunk_size):
        yield start, (en[start : start + chunk_size] @ tn.T).clamp(-1.0, 1.0)


def cosine_similarity_stats(
    event: Any, target: Any, num_bins: int = 50, chunk_size: int = 1024, fine_bins: int = 4000
) -> CosineStats:
    """Mean/std/percentiles and histograms of positive and negative cosine similarities (see :class:`CosineStats`)."""
    if num_bins < 1 or fine_bins < num_bins:
        raise ValueError(f"num_bins={num_bins}, fine_bins={fine_bins}: expected 1 <= num_bins <= fine_bins")
    _check_chunk(chunk_size)
    e, t = _paired(event, target)
    n = e.shape[0]
    positives = (_normalize(e) * _normalize(t)).sum(1).clamp(-1.0, 1.0)
    fine = torch.zeros(fine_bins, dtype=torch.float64)
    total = total_sq = 0.0
    for start, cos in _chunked_cosines(e, t, chunk_size):
        off = torch.ones_like(cos, dtype=torch.bool)
        off[torch.arange(cos.shape[0]), torch.arange(start, start + cos.shape[0])] = False
        neg = cos[off]
        total += float(neg.sum())
        total_sq += float((neg * neg).sum())
        fine += torch.histc(neg, bins=fine_bins, min=-1.0, max=1.0)
    count = n * (n - 1)
    neg_mean = total / count
    neg_std = math.sqrt(max(total_sq / count - neg_mean**2, 0.0))
    edges = torch.linspace(-1.0, 1.0, num_bins + 1, dtype=torch.float64)
    return CosineStats(
        positive_mean=float(positives.mean()),
        positive_std=float(positives.std(unbiased=False)),
        positive_percentiles={f"p{q}": float(torch.quantile(positives, q / 100)) for q in PERCENTILES},
        negative_mean=neg_mean,
        negative_std=neg_std,
        negative_percentiles={f"p{q}": _histogram_quantile(fine, q / 100) for q in PERCENTILES},
        histogram_edges=edges.tolist(),
        positive_histogram=[int(c) for c in torch.histc(positives, bins=num_bins, min=-1.0, max=1.0)],
        negative_histogram=[int(c) for c in _rebin(fine, num_bins)],
    )


def _histogram_quantile(counts: torch.Tensor, q: float) -> float:
    """Quantile of values on [-1, 1] from bin counts, linear inside the bin that crosses ``q``."""
    cum = torch.cumsum(counts, 0)
    target = q * float(cum[-1])
    k = int(torch.searchsorted(cum, torch.tensor([target], dtype=cum.dtype))[0].clamp(max=len(counts) - 1))
    before = float(cum[k - 1]) if k > 0 else 0.0
    inside = (target - before) / float(counts[k]) if counts[k] > 0 else 0.0
    width = 2.0 / len(counts)
    return -1.0 + (k + inside) * width


def _rebin(fine: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Merge fine bins into ``num_bins`` bins by bin centre."""
    centres = -1.0 + (torch.arange(len(fine), dtype=torch.float64) + 0.5) * (2.0 / len(fine))
    index = ((centres + 1.0) / 2.0 * num_bins).long().clamp(max=num_bins - 1)
    return torch.zeros(num_bins, dtype=torch.float64).index_add_(0, index, fine)


@dataclass
class NeighbourConfusion:
    """How often the nearest target (cosine) of event i is not target i.

    ``error_rate``: fraction of events whose nearest target is not their pair (1 - R@1).
    With labels (scene/sequence per pair): ``label_error_rate`` is the fraction whose nearest target
    carries another label, and ``confusion[a][b]`` counts events of label a whose nearest target has
    label b (``labels`` lists the label names in row/column order). Without labels these are None/empty.
    """

    error_rate: float
    label_error_rate: float | None
    labels: list[str]
    confusion: list[list[int]]


def nearest_neighbour_confusion(
    event: Any, target: Any, labels: Sequence[Any] | None = None, chunk_size: int = 1024
) -> NeighbourConfusion:
    """Nearest-neighbour confusion of events against targets, optionally by scene/sequence label."""
    _check_chunk(chunk_size)
    e, t = _paired(event, target)
    n = e.shape[0]
    nearest = torch.cat([cos.argmax(1) for _, cos in _chunked_cosines(e, t, chunk_size)])
    error_rate = float((nearest != torch.arange(n)).double().mean())
    if labels is None:
        return NeighbourConfusion(error_rate, None, [], [])
    labels = [str(x) for x in labels]
    if len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries: expected one per feature row ({n})")
    names = sorted(set(labels))
    index = {name: i for i, name in enumerate(names)}
    matrix = [[0] * len(names) for _ in names]
    wrong = 0
    for i, j in enumerate(nearest.tolist()):
        matrix[index[labels[i]]][index[labels[j]]] += 1
        wrong += labels[i] != labels[j]
    return NeighbourConfusion(error_rate, wrong / n, names, matrix)


@dataclass
class DimensionStats:
    """Per-dimension mean and (population) std over the N rows, and the dead dimensions (std <= threshold)."""

    mean: list[float]
    std: list[float]
    dead_dims: list[int]
    dead_threshold: float


def per_dimension_stats(features: Any, dead_threshold: float = 1e-6) -> DimensionStats:
    """Mean/std per dimension of ``features [N, D]``; dims whose std <= ``dead_threshold`` are dead."""
    if dead_threshold < 0:
        raise ValueError(f"dead_threshold={dead_threshold} is invalid: expected a value >= 0")
    x = _as_features(features, "features")
    std = x.std(0, unbiased=False)
    dead = torch.nonzero(std <= dead_threshold).flatten().tolist()
    return DimensionStats(x.mean(0).tolist(), std.tolist(), dead, dead_threshold)


@dataclass
class DiagnosisReport:
    """All diagnostics of paired ``event``/``target`` features ``[N, D]`` (see each function for definitions)."""

    num_pairs: int
    dim: int
    modality_gap: float
    alignment: float
    alignment_alpha: float
    uniformity_event: float
    uniformity_target: float
    uniformity_t: float
    linear_cka: float
    cosine: CosineStats
    neighbours: NeighbourConfusion
    event_dims: DimensionStats
    target_dims: DimensionStats

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, path) -> None:
        """Write the report as JSON atomically (temporary file, then rename)."""
        from ..utils.io_utils import atomic_write_json

        atomic_write_json(path, self.to_dict())

    def format(self) -> str:
        """A readable multi-line summary (per-dimension vectors are summarised, not listed)."""
        from jinja2 import Environment, StrictUndefined

        env = Environment(undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
        rows = list(zip(self.neighbours.labels, self.neighbours.confusion))
        return env.from_string(_REPORT_TEMPLATE).render(r=self, rows=rows, fmt=lambda v: f"{v:.4f}")


_REPORT_TEMPLATE = """\
{% macro line(label, value) %}  {{ "%-48s" | format(label) }} {{ value }}
{% endmacro %}
Alignment diagnosis: {{ r.num_pairs }} pairs, D={{ r.dim }}
{{ line("modality gap (centroid distance, normalised)", fmt(r.modality_gap)) }}\
{{ line("alignment (alpha=%s, lower is better)" % r.alignment_alpha, fmt(r.alignment)) }}\
{{ line("uniformity event / target (t=%s)" % r.uniformity_t,
        fmt(r.uniformity_event) ~ " / " ~ fmt(r.uniformity_target)) }}\
{{ line("linear CKA", fmt(r.linear_cka)) }}\
{% for kind in ("positive", "negative") %}
  cosine {{ "%-9s" | format(kind ~ "s") }} mean {{ fmt(r.cosine[kind ~ "_mean"]) }} \
std {{ fmt(r.cosine[kind ~ "_std"]) }}\
{% for k, v in r.cosine[kind ~ "_percentiles"].items() %} {{ k }} {{ fmt(v) }}{% endfor %}

{% endfor %}
{{ line("nearest target is not the pair", fmt(r.neighbours.error_rate)) }}\
{% if r.neighbours.label_error_rate is not none %}
{{ line("nearest target has another label", fmt(r.neighbours.label_error_rate)) }}\
  confusion (rows: event label; columns: label of its nearest target, same order)
{% for name, row in rows %}
    {{ "%-12s" | format(name) }} {{ row | join(" ") }}
{% endfor %}
{% endif %}
{{ line("dead dims event / target", (r.event_dims.dead_dims | length) ~ " / " ~ (r.target_dims.dead_dims | length)) }}\
"""


def diagnose(
    event: Any,
    target: Any,
    labels: Sequence[Any] | None = None,
    *,
    alpha: float = 2.0,
    t: float = 2.0,
    num_bins: int = 50,
    chunk_size: int = 1024,
    dead_threshold: float = 1e-6,
) -> DiagnosisReport:
    """Run every diagnostic on paired ``event``/``target`` features ``[N, D]`` (optional per-pair labels)."""
    e, tg = _paired(event, target)
    return DiagnosisReport(
        num_pairs=e.shape[0],
        dim=e.shape[1],
        modality_gap=modality_gap(e, tg),
        alignment=alignment(e, tg, alpha=alpha),
        alignment_alpha=alpha,
        uniformity_event=uniformity(e, t=t, chunk_size=chunk_size),
        uniformity_target=uniformity(tg, t=t, chunk_size=chunk_size),
        uniformity_t=t,
        linear_cka=linear_cka(e, tg),
        cosine=cosine_similarity_stats(e, tg, num_bins=num_bins, chunk_size=chunk_size),
        neighbours=nearest_neighbour_confusion(e, tg, labels=labels, chunk_size=chunk_size),
        event_dims=per_dimension_stats(e, dead_threshold),
        target_dims=per_dimension_stats(tg, dead_threshold),
    )
