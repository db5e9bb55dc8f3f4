"""Evaluation plots (PNG) with their data beside them (JSON), written atomically.

Every function draws with matplotlib's Agg backend (imported inside the function: matplotlib and
scikit-learn are optional ``plots`` extras) and writes ``<path>`` plus ``<path>.json`` holding the
exact numbers that were drawn, so reports and tests can check a figure against its table.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.io_utils import atomic_write_bytes, atomic_write_json


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("evalign plots need matplotlib: pip install 'evalign[plots]'") from e
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike, data: Mapping[str, Any]) -> Path:
    plt = _pyplot()
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"plot path {path} must end with .png")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_json(data_path(path), dict(data))
    atomic_write_bytes(path, buf.getvalue())
    return path


def data_path(png: str | os.PathLike) -> Path:
    """The JSON file holding the numbers drawn in ``png`` (``x.png`` -> ``x.png.json``)."""
    png = Path(png)
    return png.with_name(png.name + ".json")


def history_series(history: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[float]]) -> tuple[str, list, dict]:
    """Normalise a training history to ``(x_label, x_values, {series: values})``.

    Accepts a list of per-epoch/step dicts (``[{"epoch": 1, "train_loss": 2.3, "R@1": 0.1}, ...]``)
    or a dict of equally long lists (``{"train_loss": [...], "val_loss": [...]}``). Non-numeric
    entries are ignored; missing values become NaN (gaps in the curve).
    """
    if isinstance(history, Mapping):
        lengths = {k: len(v) for k, v in history.items() if isinstance(v, Sequence) and not isinstance(v, str)}
        if not lengths:
            raise ValueError("history has no series: expected {name: [values, ...]} or a list of per-epoch dicts")
        if len(set(lengths.values())) != 1:
            raise ValueError(f"history series have different lengths {lengths}: expected equal lengths")
        rows = [{k: history[k][i] for k in lengths} for i in range(next(iter(lengths.values())))]
    else:
        rows = list(history)
        if not rows or not all(isinstance(r, Mapping) for r in rows):
            raise ValueError("history must be a non-empty list of per-epoch dicts or a dict of lists")
    x_key = next((k for k in ("epoch", "step", "global_step") if all(k in r for r in rows)), None)
    x_values = [float(r[x_key]) for r in rows] if x_key else list(range(1, len(rows) + 1))
    names = [
        k
        for k in dict.fromkeys(k for r in rows for k in r)
        if k != x_key and any(isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool) for r in rows)
    ]
    series = {
        n: [float(r[n]) if isinstance(r.get(n), (int, float)) and not isinstance(r.get(n), bool) else math.nan for r in rows]
        for n in names
    }
    if not series:
        raise ValueError("history has no numeric series to plot")
    return x_key or "epoch", x_values, series


_MAX_METRIC_CURVES = 4
_NOT_CURVES = {"lr", "learning_rate", "seconds", "time", "epoch_time", "step", "global_step"}


def plot_training_curve(
    history: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[float]], path: str | os.PathLike
) -> Path:
    """Loss curves (left axis) and metric series such as R@k (right axis) -> PNG.

    ``history`` as in :func:`history_series`. Series whose name contains ``loss`` go on the left
    axis; the others on a right axis (at most 4: the R@1 and cosine ones when there are more).
    Bookkeeping columns (lr, seconds) are not drawn. Returns ``path``; ``<path>.json`` holds x and
    every drawn series.
    """
    x_label, x, series = history_series(history)
    # bookkeeping columns of training histories are not curves worth drawing
    series = {k: v for k, v in series.items() if k.lower() not in _NOT_CURVES} or series
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    losses = {k: v for k, v in series.items() if "loss" in k.lower()}
    others = {k: v for k, v in series.items() if k not in losses}
    if len(others) > _MAX_METRIC_CURVES:  # many validation metrics: keep the headline ones readable
        headline = {k: v for k, v in others.items() if k.endswith("R@1") or "cosine" in k.lower()}
        others = dict(list((headline or others).items())[:_MAX_METRIC_CURVES])
    series = {**losses, **others}
    for name, values in (losses or others).items():
        ax.plot(x, values, marker="o", ms=3, label=name)
    ax.set_xlabel(x_label)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("loss" if losses else "value")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if losses and others:
        ax2 = ax.twinx()
        for i, (name, values) in enumerate(others.items()):
            ax2.plot(x, values, ls="--", marker="s", ms=3, color=f"C{len(losses) + i}", label=name)
        ax2.set_ylabel("metric")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.12 if others and losses else 1.02, 1))
    ax.set_title("Training curve")
    return _save(fig, path, {"x_label": x_label, "x": x, "series": _json_floats(series)})


def plot_heatmap(
    matrix: Sequence[Sequence[float]] | np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str = "",
    row_title: str = "train",
    col_title: str = "eval",
    value_format: str = "{:.3f}",
) -> Path:
    """Annotated heatmap of a ``[rows, cols]`` matrix (e.g. cross-duration R@1) -> PNG + JSON."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape != (len(row_labels), len(col_labels)):
        raise ValueError(
            f"heatmap matrix has shape {m.shape}: expected ({len(row_labels)}, {len(col_labels)}) from the labels"
        )
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * m.shape[1], 0.8 + 0.6 * m.shape[0]))
    im = ax.imshow(m, cmap="viridis", aspect="auto")
    ax.set_xticks(range(m.shape[1]), [str(c) for c in col_labels])
    ax.set_yticks(range(m.shape[0]), [str(r) for r in row_labels])
    ax.set_xlabel(col_title)
    ax.set_ylabel(row_title)
    finite = m[np.isfinite(m)]
    middle = float(finite.mean()) if finite.size else 0.0
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if np.isfinite(m[i, j]):
                color = "black" if m[i, j] > middle else "white"
                ax.text(j, i, value_format.format(m[i, j]), ha="center", va="center", fontsize=8, color=color)
    fig.colorbar(im, ax=ax)
    if title:
        ax.set_title(title)
    data = {"rows": [str(r) for r in row_labels], "cols": [str(c) for c in col_labels], "matrix": _json_floats(m)}
    return _save(fig, path, data)


def embed_2d(features: np.ndarray, *, method: str = "tsne", seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """``[N, D]`` features -> ``[N, 2]`` with t-SNE (scikit-learn) or UMAP (umap-learn, optional).

    Raises ImportError naming the extra to install when the library is missing.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 3:
        raise ValueError(f"features have shape {x.shape}: expected [N>=3, D]")
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = min(perplexity, (x.shape[0] - 1) / 3)
        # exact gradients for small N: as fast, deterministic, and no OpenMP thread spin-up
        method_ = "exact" if x.shape[0] <= 300 else "barnes_hut"
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, method=method_)
        return tsne.fit_transform(x)
    if method == "umap":
        try:
            import umap
        except ImportError as e:
            raise ImportError("UMAP plots need umap-learn: pip install 'evalign[umap]'") from e
        n_neighbors = max(2, min(15, x.shape[0] - 1))
        return umap.UMAP(n_components=2, n_neighbors=n_neighbors, random_state=seed).fit_transform(x)
    raise ValueError(f"method={method!r} is invalid: expected 'tsne' or 'umap'")


def plot_feature_space(
    panels: Mapping[str, Mapping[str, np.ndarray]],
    path: str | os.PathLike,
    *,
    scenes: Sequence[str] | None = None,
    method: str = "tsne",
    seed: int = 0,
) -> Path:
    """2-D embeddings of event and target features, one column per panel (e.g. before/after alignment).

    ``panels`` maps a title to ``{"event": [N, D], "target": [N, D]}`` (same D inside a panel). Each
    panel is embedded jointly and drawn twice: top row coloured by modality, bottom row by scene
    (``scenes``: N labels shared by event and target rows; omitted -> one row). Returns ``path``;
    ``<path>.json`` holds the 2-D points, modality and scene of every point.
    """
    if not panels:
        raise ValueError("plot_feature_space needs at least one panel {title: {'event': ..., 'target': ...}}")
    plt = _pyplot()
    rows = 2 if scenes is not None else 1
    fig, axes = plt.subplots(rows, len(panels), figsize=(3.6 * len(panels), 3.3 * rows), squeeze=False)
    data: dict[str, Any] = {"method": method, "panels": {}}
    for col, (title, feats) in enumerate(panels.items()):
        if set(feats) != {"event", "target"}:
            raise KeyError(f"panel {title!r} has keys {sorted(feats)}: expected 'event' and 'target'")
        ev, tg = np.asarray(feats["event"], np.float64), np.asarray(feats["target"], np.float64)
        if ev.ndim != 2 or ev.shape != tg.shape:
            raise ValueError(f"panel {title!r}: event {ev.shape} and target {tg.shape} must both be [N, D]")
        if scenes is not None and len(scenes) != ev.shape[0]:
            raise ValueError(f"scenes has {len(scenes)} labels: expected N={ev.shape[0]}")
        points = embed_2d(np.concatenate([ev, tg]), method=method, seed=seed)
        n = ev.shape[0]
        modality = ["event"] * n + ["target"] * n
        ax = axes[0, col]
        ax.scatter(points[:n, 0], points[:n, 1], s=10, c="C3", label="event", alpha=0.8)
        ax.scatter(points[n:, 0], points[n:, 1], s=10, c="C0", label="target", marker="^", alpha=0.8)
        ax.set_title(f"{title}: modality", fontsize=9)
        ax.legend(fontsize=7)
        entry: dict[str, Any] = {"points": _json_floats(points), "modality": modality}
        if scenes is not None:
            scene_all = [str(s) for s in scenes] * 2
            ax = axes[1, col]
            for k, scene in enumerate(sorted(set(scene_all))):
                idx = np.array([s == scene for s in scene_all])
                is_event = np.array([m == "event" for m in modality])
                ax.scatter(points[idx & is_event, 0], points[idx & is_event, 1], s=10, color=f"C{k % 10}", label=scene)
                ax.scatter(points[idx & ~is_event, 0], points[idx & ~is_event, 1], s=10, color=f"C{k % 10}", marker="^")
            ax.set_title(f"{title}: scene (o event, ^ target)", fontsize=9)
            ax.legend(fontsize=6, ncol=2)
            entry["scene"] = scene_all
        data["panels"][title] = entry
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"Feature space ({method.upper()})")
    return _save(fig, path, data)


def _json_floats(x) -> Any:
    """Arrays/dicts of floats -> JSON-safe lists (NaN -> None)."""
    if isinstance(x, Mapping):
        return {k: _json_floats(v) for k, v in x.items()}
    arr = np.asarray(x, dtype=np.float64)
    return [None if not math.isfinite(v) else float(v) for v in arr.ravel()] if arr.ndim == 1 else [
        _json_floats(row) for row in arr
    ]


def _as_array(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _pca(x: np.ndarray, k: int) -> np.ndarray:
    xc = x - x.mean(0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    return xc @ vt[:k].T


def before_after_panels(
    event_features, target_features, aligned_features, *, normalize: bool = True
) -> dict[str, dict[str, np.ndarray]]:
    """Panels for :func:`plot_feature_space`: raw event vs target features, then aligned vs target.

    Before alignment the two modalities have no shared space (often not even the same width): each is
    reduced separately to ``k = min(De, Dt, N)`` PCA components, so the "before" panel shows the
    modality gap, not a meaningful joint geometry. Inputs are ``[N, D]`` arrays or tensors. With
    ``normalize`` every row is scaled to unit length first (the cosine geometry retrieval uses).
    """
    ev, tg, al = (_as_array(t) for t in (event_features, target_features, aligned_features))
    if not (ev.ndim == tg.ndim == al.ndim == 2) or not (ev.shape[0] == tg.shape[0] == al.shape[0]):
        raise ValueError(
            f"event {ev.shape}, target {tg.shape}, aligned {al.shape}: expected [N, D] arrays with the same N"
        )
    if al.shape[1] != tg.shape[1]:
        raise ValueError(f"aligned features have width {al.shape[1]}: expected the target width {tg.shape[1]}")
    if normalize:
        ev, tg, al = (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12) for x in (ev, tg, al))
    k = min(ev.shape[1], tg.shape[1], ev.shape[0])
    before = {"event": ev, "target": tg} if ev.shape[1] == tg.shape[1] else {"event": _pca(ev, k), "target": _pca(tg, k)}
    return {"before alignment": before, "after alignment": {"event": al, "target": tg}}
