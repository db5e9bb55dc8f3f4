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
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..utils.io_utils import atomic_write_json, atomic_write_text


@dataclass
class FittedAligner:
    """What a fitter returns: ``align(event_features [N, De]) -> [N, Dt]`` plus how it was trained.

    Attributes:
        align: the trained mapping (no gradients needed).
        history: per-epoch training dicts (``epoch``, ``train_loss``, ...); empty for closed-form fits.
        seconds: wall time of the fit.
        notes: anything the report should say about this fit (fallbacks, skipped terms).
        model: the trained model, when there is one (for saving or plots).
    """

    align: Callable[[torch.Tensor], torch.Tensor]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    notes: str = ""
    model: Any = None

    def __call__(self, event_features: torch.Tensor) -> torch.Tensor:
        return self.align(event_features)


#: A fitter trains on an ``AlignmentDataset`` and returns a :class:`FittedAligner`.
Fitter = Callable[[Any], FittedAligner]


def _model_aligner(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> model(x).aligned_features``; pooled-only models (triple-modal outside token mode) get token inputs
    mean-pooled."""
    model.eval()
    pooled_only = getattr(model, "token_mode", None) is False

    @torch.no_grad()
    def align(x: torch.Tensor) -> torch.Tensor:
        return model(_pool_tokens(x) if pooled_only else x).aligned_features

    return align


def aligner_from_model(model, **info) -> FittedAligner:
    """Wrap a trained (or reloaded) alignment model; ``info``: ``history``, ``seconds``, ``notes``."""
    return FittedAligner(_model_aligner(model), model=model, **info)


def ridge_fitter(ridge: float = 1e-3) -> Fitter:
    """The lightweight strategy's closed-form ridge baseline (instant; pooled features)."""

    def fit(dataset) -> FittedAligner:
        from ..lightweight.configuration_lightweight import LightweightAlignmentConfig
        from ..lightweight.modeling_lightweight import LightweightAlignmentModel

        start = time.perf_counter()
        model = LightweightAlignmentModel(
            LightweightAlignmentConfig(event_dim=dataset.event_dim, target_dim=dataset.target_dim)
        )
        model.fit_closed_form(dataset.event_features, dataset.target_features, ridge=ridge)
        return FittedAligner(_model_aligner(model), seconds=time.perf_counter() - start,
                             notes=f"closed-form ridge ({ridge:g})", model=model)

    return fit


def strategy_fitter(strategy: str, params: Mapping[str, float] | None = None, settings=None,
                    **context) -> Fitter:
    """Any strategy of the registry, trained by its spec's ``map_fit`` (the strategy map's fitter) with ``params``
    (default: the first point of its ``map_grid``); ``context``: ``text_tower``, ``label_key``."""
    from ..registry import get_strategy, resolve
    from .strategy_map import TrainSettings, grid_points

    spec = get_strategy(strategy)
    if spec.map_fit is None:
        raise ValueError(f"strategy {strategy!r} declares no map_fit: it cannot be fitted on features")
    point = dict(params) if params is not None else grid_points(spec.map_grid or {})[0]
    settings = settings or TrainSettings()

    def fit(dataset) -> FittedAligner:
        start = time.perf_counter()
        torch.manual_seed(settings.seed)
        model, info = resolve(spec.map_fit)(dataset, point, settings, context)
        return aligner_from_model(model, seconds=time.perf_counter() - start, notes=info.get("notes", ""))

    return fit


def _pool_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=1) if x.dim() == 3 else x


def contrastive_fitter(epochs: int = 20, lr: float = 5e-4, batch_size: int = 32, seed: int = 0) -> Fitter:
    """CEIA-style feature-level contrastive head trained with ``ContrastiveAlignmentTrainer`` (CPU/GPU)."""

    def fit(dataset) -> FittedAligner:
        from ..contrastive.configuration_contrastive import ContrastiveAlignmentConfig
        from ..contrastive.modeling_contrastive import ContrastiveAlignmentModel
        from ..training.trainer import ContrastiveAlignmentTrainer

        start = time.perf_counter()
        torch.manual_seed(seed)
        model = ContrastiveAlignmentModel(
            ContrastiveAlignmentConfig(event_dim=dataset.event_dim, target_dim=dataset.target_dim)
        )
        trainer = ContrastiveAlignmentTrainer(
            model, dataset, lr=lr, batch_size=min(batch_size, len(dataset)), seed=seed, progress=False
        )
        result = trainer.train(num_epochs=epochs)
        model.cpu()
        return FittedAligner(_model_aligner(model), history=result.history, seconds=time.perf_counter() - start,
                             notes=f"InfoNCE, {epochs} epochs", model=model)

    return fit


def triple_modal_fitter(
    epochs: int = 20,
    lr: float = 5e-4,
    batch_size: int = 32,
    seed: int = 0,
    text_model_id: str | None = None,
    label_key: str = "scene",
) -> Fitter:
    """Triple-modal (EventBind-style) head. With ``text_model_id`` and a per-sample ``label_key``
    column (synthetic DSEC records the scene), classes are the sorted label values and the
    event-text and image-text terms are trained; otherwise only the event <-> image term.
    Token-level features are mean-pooled over tokens first."""

    def fit(dataset) -> FittedAligner:
        from ..triple_modal.configuration_triple_modal import TripleModalAlignmentConfig
        from ..triple_modal.modeling_triple_modal import TripleModalAlignmentModel
        from ..triple_modal.training import train_triple_modal

        start = time.perf_counter()
        torch.manual_seed(seed)
        ev, tg = _pool_tokens(dataset.event_features), _pool_tokens(dataset.target_features)
        labels = names = None
        notes = []
        if text_model_id is not None:
            try:
                values = [str(v) for v in dataset.metadata_column(label_key)]
                names = sorted(set(values))
                labels = torch.tensor([names.index(v) for v in values])
            except KeyError:
                notes.append(f"no {label_key!r} metadata: event-image term only")
        else:
            notes.append("no text tower given: event-image term only")
        kwargs = {"text_model_id": text_model_id} if text_model_id else {}
        config = TripleModalAlignmentConfig(
            event_dim=ev.shape[-1], target_dim=tg.shape[-1], hidden_dim=min(1024, 4 * ev.shape[-1]),
            class_names=names, **kwargs,
        )
        model = TripleModalAlignmentModel(config)
        if labels is not None:
            try:
                model.text_tower()
            except ValueError as e:  # projection width differs from the target features' width
                notes.append(f"text tower unusable ({e}): event-image term only")
                labels = names = None
        history = train_triple_modal(model, ev, tg, labels, names, epochs=epochs, batch_size=min(batch_size, len(ev)),
                                     lr=lr, seed=seed)
        if labels is not None:
            notes.append(f"{len(names)} class{'es' if len(names) != 1 else ''} from {label_key!r}")

        return aligner_from_model(model, history=history, seconds=time.perf_counter() - start,
                                  notes="; ".join(notes))

    return fit


def evaluate_alignment(
    aligned: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1, 5, 10), positive_groups=None, model=None
) -> dict[str, float]:
    """``mse``, ``cosine`` and bidirectional retrieval recall (``mean/R@k``, ``e2t/R@k``, ``t2e/R@k``) by the one
    evaluation rule (``evaluation.scoring``: ``model``'s strategy rule; tokens flattened by default)."""
    from .scoring import rows, score_rows

    if aligned.dim() == 2 and target.dim() == 3:  # pooled model (triple-modal) vs token targets
        target = target.mean(dim=1)
    a, t = rows(model, aligned), rows(model, target)
    return score_rows(a, t, ks=tuple(k for k in ks if k <= a.shape[0]) or (1,), positive_groups=positive_groups)


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

| train \\ eval | {{ r.durations | join(" | ") }} |
|---|{% for _ in r.durations %}---|{% endfor %}
{% for name, row in rows %}| {{ name }} |{% for v in row %} {{ fmt(v) }} |{% endfor %}
{% endfor %}"""


def cross_duration_matrix(
    feature_dirs: Mapping[str, str | os.PathLike],
    *,
    fitter: Fitter | None = None,
    fitted: Mapping[str, FittedAligner] | None = None,
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
        fitted: already trained aligners per duration (trained on the same train split, i.e. the same
            ``val_fraction``/``seed``/``group_by``); those durations are not refitted.
        metric: key of :func:`evaluate_alignment` kept in the matrix.
        val_fraction, group_by, seed: per-directory split (see ``AlignmentDataset.split``).
        positive_key: per-sample metadata key whose equal values count as retrieval positives.
    """
    from ..data.alignment_dataset import AlignmentDataset

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
        from ..utils.progress import progress_bar

        items = progress_bar(names, desc="cross-duration", unit="duration")
    for train_name in items:
        align = fitted[train_name] if fitted and train_name in fitted else fitter(splits[train_name][0])
        metrics[train_name] = {}
        for eval_name in names:
            val = splits[eval_name][1]
            groups = val.metadata_column(positive_key) if positive_key else None
            with torch.no_grad():
                aligned = align(val.event_features)
            metrics[train_name][eval_name] = evaluate_alignment(aligned, val.target_features, ks, groups,
                                                                model=getattr(align, "model", None))
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
