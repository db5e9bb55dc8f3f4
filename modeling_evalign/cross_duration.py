"""Cross-duration generalisation: fit on one window duration, evaluate on every duration.

Given one feature directory per duration (``AlignmentDataset`` format), each directory is split once
into train/val (``val_fraction``, optionally whole groups such as sequences via ``group_by`` so that
overlapping windows never straddle the split). For every training duration a model is fitted on its
train split and evaluated on the val split of every duration (the diagonal is the in-duration
score). Results: a ``[train, eval]`` matrix of one chosen metric, all metrics per cell, a markdown
table, JSON and a heatmap PNG.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .io_utils import atomic_write_json, atomic_write_text

#: A fitter trains on a dataset and returns ``align(event_features [N, De]) -> [N, Dt]``.
Fitter = Callable[[Any], Callable[[torch.Tensor], torch.Tensor]]


def ridge_fitter(ridge: float = 1e-3) -> Fitter:
    """The lightweight strategy's closed-form ridge baseline (instant; pooled features)."""

    def fit(dataset) -> Callable[[torch.Tensor], torch.Tensor]:
        from .lightweight.configuration_lightweight import LightweightAlignmentConfig
        from .lightweight.modeling_lightweight import LightweightAlignmentModule

        model = LightweightAlignmentModule(
            LightweightAlignmentConfig(event_dim=dataset.event_dim, target_dim=dataset.target_dim)
        )
        model.fit_closed_form(dataset.event_features, dataset.target_features, ridge=ridge)
        model.eval()

        @torch.no_grad()
        def align(x: torch.Tensor) -> torch.Tensor:
            return model(x).aligned_features

        return align

    return fit


def evaluate_alignment(
    aligned: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1, 5, 10), positive_groups=None
) -> dict[str, float]:
    """``mse``, ``cosine`` and bidirectional retrieval recall (``mean/R@k``, ``e2t/R@k``, ``t2e/R@k``)."""
    from .metrics import bidirectional_recall, cosine_similarity, mse

    a, t = aligned.reshape(aligned.shape[0], -1).float(), target.reshape(target.shape[0], -1).float()
    out = {"mse": mse(a, t), "cosine": cosine_similarity(a, t)}
    out.update(bidirectional_recall(a, t, ks=tuple(k for k in ks if k <= a.shape[0]) or (1,),
                                    positive_groups=positive_groups))
    return out


@dataclass
class CrossDurationResult:
    """Outcome of :func:`cross_duration_matrix`.

    Attributes:
        durations: labels in input order (rows = training duration, columns = evaluated duration).
        metric: the metric held in ``matrix``.
        matrix: ``[len(durations)][len(durations)]`` values of ``metric``.
        metrics: ``metrics[train][eval]`` = every metric of that cell.
        split: the split rule used (for the report).
        sizes: ``{duration: {"train": n, "val": n}}``.
    """

    durations: list[str]
    metric: str
    matrix: list[list[float]]
    metrics: dict[str, dict[str, dict[str, float]]]
    split: str
    sizes: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_markdown(self, value_format: str = "{:.3f}") -> str:
        """Markdown table: one row per training duration, one column per evaluated duration."""
        from jinja2 import Template

        return Template(_MATRIX_TEMPLATE).render(r=self, fmt=value_format.format, rows=zip(self.durations, self.matrix))


_MATRIX_TEMPLATE = """\
{{ r.metric }} (rows: trained on, columns: evaluated on; split: {{ r.split }})

| train \\\\ eval | {{ r.durations | join(" | ") }} |
|---|{% for _ in r.durations %}---|{% endfor %}
{% for name, row in rows %}| {{ name }} | {% for v in row %}{{ fmt(v) }} | {% endfor %}
{% endfor %}"""


def cross_duration_matrix(
    feature_dirs: Mapping[str, str | os.PathLike],
    *,
    fitter: Fitter | None = None,
    metric: str = "mean/R@1",
    val_fraction: float = 0.25,
    group_by: str | None = None,
    positive_key: str | None = None,
    seed: int = 0,
    ks: Sequence[int] = (1, 5, 10),
    progress: bool = False,
) -> CrossDurationResult:
    """Train on each duration's train split, evaluate on every duration's val split.

    Args:
        feature_dirs: ``{duration label: feature directory}`` (e.g. ``{"200ms": ..., "1s": ...}``);
            every directory must have the same event and target widths.
        fitter: how to train (default :func:`ridge_fitter`).
        metric: key of :func:`evaluate_alignment` kept in the matrix.
        val_fraction, group_by, seed: per-directory split (see ``AlignmentDataset.split``).
        positive_key: per-sample metadata key whose equal values count as retrieval positives.
    """
    from .data.alignment_dataset import AlignmentDataset

    if len(feature_dirs) < 2:
        raise ValueError(f"cross_duration_matrix needs at least 2 durations, got {list(feature_dirs)}")
    fitter = fitter or ridge_fitter()
    splits = {}
    widths = {}
    for name, path in feature_dirs.items():
        ds = AlignmentDataset.from_directory(path)
        widths[name] = (ds.event_dim, ds.target_dim)
        splits[name] = ds.split(val_fraction, seed=seed, group_by=group_by)
    if len(set(widths.values())) != 1:
        raise ValueError(f"feature directories differ in (event_dim, target_dim): {widths}; expected one width pair")
    names = list(feature_dirs)
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    items = names
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(names, desc="cross-duration", unit="duration")
    for train_name in items:
        align = fitter(splits[train_name][0])
        metrics[train_name] = {}
        for eval_name in names:
            val = splits[eval_name][1]
            groups = val.metadata_column(positive_key) if positive_key else None
            with torch.no_grad():
                aligned = align(val.event_features)
            metrics[train_name][eval_name] = evaluate_alignment(aligned, val.target_features, ks, groups)
    if metric not in metrics[names[0]][names[0]]:
        raise KeyError(f"metric {metric!r} not computed; available: {sorted(metrics[names[0]][names[0]])}")
    matrix = [[metrics[tr][ev][metric] for ev in names] for tr in names]
    split = f"val_fraction={val_fraction}, seed={seed}" + (f", whole {group_by} groups" if group_by else ", random rows")
    sizes = {n: {"train": len(splits[n][0]), "val": len(splits[n][1])} for n in names}
    return CrossDurationResult(names, metric, matrix, metrics, split, sizes)


def write_cross_duration_report(result: CrossDurationResult, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``cross_duration.md``, ``cross_duration.json`` and ``cross_duration_heatmap.png`` (+ .json).

    Returns ``{"markdown": ..., "json": ..., "heatmap": ...}``.
    """
    from .plots import plot_heatmap

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    heatmap = plot_heatmap(
        result.matrix, result.durations, result.durations, out / "cross_duration_heatmap.png",
        title=f"Cross-duration {result.metric}", row_title="trained on", col_title="evaluated on",
    )
    md = result.to_markdown() + f"\n![cross-duration heatmap]({heatmap.name})\n"
    return {
        "markdown": atomic_write_text(out / "cross_duration.md", md),
        "json": atomic_write_json(out / "cross_duration.json", result.to_dict()),
        "heatmap": heatmap,
    }
