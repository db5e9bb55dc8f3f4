"""The measured strategy map: every trainable feature-level strategy x training-set size x hyperparameters.

For each duration a feature root holds the pipeline's split folders (``train/``, optional ``validation/``,
``test/``: whole sequences per split, the DSEC builder's rule). A *run* trains one strategy with one
hyperparameter point on the first ``pairs`` windows of a fixed random permutation of ``train`` (so the
subsets are nested: 500 pairs contain the 250) and evaluates on the held-out splits. The best point per
(duration, strategy, pairs) is chosen on ``validation`` (``test`` when there is none) and reported on
``test``. Retrieval positives follow :class:`~modeling_evalign.evaluation.metrics.TimeWindows`: windows of
the same sequence that overlap in time count as hits (DSEC windows of one duration do not overlap, so this
reduces to the pair itself; ``seq/R@1`` is the looser same-sequence rule).

Every run's record is cached as ``<cache>/<key>.json`` (key = hash of the run's config and of the data), so a
killed sweep continues where it stopped. Features are pooled to ``[N, D]`` (mean over tokens) first, unless
``load_duration(tokens=True)``: token features ``[N, P, D]`` (the main job's patch tokens) are then kept, every
strategy maps them token by token (contrastive and triple_modal compare the flattened token layouts; triple_modal
reaches the text space through its text head) and retrieval compares the flattened ``[N, P * D]`` tokens.
Crossovers are interpolated linearly in ``log(pairs)`` (see :func:`crossovers`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.io_utils import atomic_write_json
from .strategy_map_select import crossovers, select_best  # noqa: F401  (part of this module's API)


def map_grids() -> dict[str, dict[str, list[float]]]:
    """Default hyperparameter grid per strategy: the closed-form ridge reference, then every strategy of the
    registry that declares a ``map_grid`` (the full product of each strategy's lists is swept). ``width`` 0
    means a linear head, otherwise the hidden/bottleneck width of an MLP head."""
    from ..registry import get_strategy, strategy_names

    grids = {"closed_form": {"ridge": [0.01, 1.0, 100.0]}}
    for name in strategy_names("features"):
        if get_strategy(name).map_grid is not None:
            grids[name] = {k: list(v) for k, v in get_strategy(name).map_grid.items()}
    return grids


#: Default grids, strategies in report order and each one's parameter names (as registered at import).
DEFAULT_GRIDS: dict[str, dict[str, list[float]]] = map_grids()
STRATEGIES = tuple(DEFAULT_GRIDS)
PARAMS = {name: tuple(grid) for name, grid in DEFAULT_GRIDS.items()}
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings shared by every trained run.

    ``steps``: optimizer steps aimed at per run; epochs = max(``min_epochs``, ceil(steps / batches per
    epoch)), so small subsets get as many updates as large ones instead of a handful.
    """

    steps: int = 500
    min_epochs: int = 3
    batch_size: int = 64
    seed: int = 0

    def epochs(self, n: int) -> int:
        return max(self.min_epochs, math.ceil(self.steps / max(1, n // min(self.batch_size, n))))


@dataclass
class DurationData:
    """One duration's splits (pooled ``[N, D]``, or tokens ``[N, P, D]``) plus a fingerprint of their files."""

    name: str
    splits: dict[str, Any]
    fingerprint: str
    order: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    tokens: bool = False

    @property
    def n_train(self) -> int:
        return len(self.splits["train"])

    def subset(self, pairs: int):
        """The first ``pairs`` rows of the fixed permutation of ``train`` (nested subsets)."""
        if not 2 <= pairs <= self.n_train:
            raise ValueError(f"[{self.name}] {pairs} training pairs requested: train has {self.n_train}")
        return self.splits["train"].subset(np.sort(self.order[:pairs]))


def _prepared(ds, transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
    """Pooled float32 ``[N, D]`` features (tokens averaged), optionally mapped by ``transform``."""
    from ..data.alignment_dataset import AlignmentDataset

    ev, tg = ds.event_features.float(), ds.target_features.float()
    if ev.dim() == 2 and tg.dim() == 2 and transform is None:
        return ds
    ev, tg = (t.mean(dim=1) if t.dim() == 3 else t for t in (ev, tg))
    if transform is not None:
        with torch.no_grad():
            ev, tg = transform(ev).float(), transform(tg).float()
    shapes = ("num_samples", "event_dim", "target_dim", "event_shape", "target_shape")
    meta = {k: v for k, v in ds.metadata.items() if k not in shapes}
    if ds.samples is not None:
        meta["samples"] = ds.samples_list()
    return AlignmentDataset(ev, tg, meta)


def load_duration(name: str, root: str | Path, seed: int = 0,
                  transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  transform_id: str | None = None, tokens: bool = False) -> DurationData:
    """Read ``root/{train,validation,test}`` (validation optional) as pooled ``AlignmentDataset`` s;
    ``transform`` (e.g. a CLIP tower's projection head, named by ``transform_id`` in the fingerprint) maps
    both sides' features. ``tokens``: keep token features ``[N, P, D]`` as they are (both sides must be tokens
    with the same token count)."""
    from ..data.alignment_dataset import AlignmentDataset

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"[{name}] feature root {root} does not exist")
    if tokens and transform is not None:
        raise ValueError(f"[{name}] tokens=True keeps the features as they are: no transform")
    digest = hashlib.sha1(str(transform_id).encode() + (b"|tokens" if tokens else b""))
    splits = {}
    for split in SPLITS:
        path = root / split
        if not path.is_dir():
            if split == "validation":
                continue
            raise FileNotFoundError(f"[{name}] {path} is missing: expected the {split} split's feature directory")
        ds = AlignmentDataset.from_directory(path)
        if tokens and not (len(ds.event_shape) == len(ds.target_shape) == 2 and ds.event_shape[0] == ds.target_shape[0]):
            raise ValueError(f"[{name}] {path}: tokens=True needs token features [N, P, D] on both sides with the "
                             f"same P, got event {tuple(ds.event_shape)} and target {tuple(ds.target_shape)} per row")
        splits[split] = ds if tokens else _prepared(ds, transform)
        for f in sorted(path.iterdir()):
            if f.is_file():
                digest.update(f"{split}/{f.name}:{f.stat().st_size}".encode())
        meta = path / "metadata.json"
        if meta.is_file():
            digest.update(meta.read_bytes())
    dims = {s: (d.event_dim, d.target_dim) for s, d in splits.items()}
    if len(set(dims.values())) != 1:
        raise ValueError(f"[{name}] splits differ in (event_dim, target_dim): {dims}")
    if len(splits["test"]) < 2:
        raise ValueError(f"[{name}] {root / 'test'} has {len(splits['test'])} rows: need >= 2 for retrieval")
    order = np.random.default_rng(seed).permutation(len(splits["train"]))
    return DurationData(name, splits, digest.hexdigest()[:16], order, tokens)


def resolve_sizes(requested: Sequence[int | str], n_train: int) -> list[int]:
    """Training-set sizes for one duration: ``"all"`` = every training pair; sizes above ``n_train`` are
    replaced by ``n_train``; sorted, deduplicated."""
    out = set()
    for s in requested:
        value = n_train if s == "all" else int(s)
        if value < 2:
            raise ValueError(f"training-set size {s!r}: expected an int >= 2 or 'all'")
        out.add(min(value, n_train))
    return sorted(out)


def grid_points(grid: Mapping[str, Sequence[float]]) -> list[dict[str, float]]:
    """The product of a grid's value lists, in a stable order."""
    names = sorted(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def run_key(config: Mapping[str, Any]) -> str:
    return hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:20]


# -- fitting ---------------------------------------------------------------------------------------

@dataclass
class TextTower:
    """A frozen CLIP text tower (``CLIPTextModelWithProjection`` + tokenizer) and where it came from."""

    model: Any
    tokenizer: Any
    source: str


def _labels(ds, key: str) -> list[str] | None:
    try:
        return [str(v) for v in ds.metadata_column(key)]
    except KeyError:
        return None


def fit_run(strategy: str, train, params: Mapping[str, float], settings: TrainSettings,
            text_tower: TextTower | None = None, label_key: str = "scene") -> tuple[Any, dict[str, Any]]:
    """Train ``strategy`` with ``params`` on ``train`` (its registry spec's ``map_fit``; ``closed_form``: the
    float64 ridge reference); returns ``(model, info)`` where ``model(x)`` has ``.aligned_features`` and
    ``info`` holds ``seconds``, ``epochs``, ``notes`` (and ``class_names``)."""
    from ..registry import get_strategy, resolve

    start = time.perf_counter()
    torch.manual_seed(settings.seed)
    if strategy == "closed_form":
        from ..lightweight.configuration_lightweight import LightweightAlignmentConfig
        from ..lightweight.modeling_lightweight import LightweightAlignmentModel

        model = LightweightAlignmentModel(LightweightAlignmentConfig(event_dim=train.event_dim,
                                                                      target_dim=train.target_dim))
        model.fit_closed_form(train.event_features.float(), train.target_features.float(),
                              ridge=float(params["ridge"]))
        info: dict[str, Any] = {"epochs": 0, "notes": "ridge regression in float64"}
    else:
        spec = get_strategy(strategy)
        if spec.map_fit is None:
            raise ValueError(f"strategy {strategy!r} has no strategy-map fitter: expected one of {list(map_grids())}")
        model, info = resolve(spec.map_fit)(train, params, settings, {"text_tower": text_tower, "label_key": label_key})
    model.eval()
    info["seconds"] = time.perf_counter() - start
    return model, info


# -- evaluation ------------------------------------------------------------------------------------

def time_windows(ds, pad_us: float = 0.0):
    """The split's :class:`TimeWindows`, each window widened by ``pad_us`` on both sides (None without the
    ``sequence``/``window_start_us``/``window_end_us`` metadata)."""
    from .metrics import TimeWindows

    samples = ds.samples_list()
    if not samples or not all(k in samples[0] for k in ("sequence", "window_start_us", "window_end_us")):
        return None
    w = TimeWindows.from_samples(samples)
    return TimeWindows(w.sequence, np.asarray(w.start, dtype=np.float64) - pad_us,
                       np.asarray(w.end, dtype=np.float64) + pad_us)


def chance_r1(ds, pad_us: float = 0.0) -> float:
    """Expected R@1 of a random ranking: mean over queries of (number of positives) / N."""
    n = len(ds)
    windows = time_windows(ds, pad_us)
    if windows is None:
        return 1 / n
    seq, t0, t1 = windows.tensors(n)
    same = (seq[:, None] == seq[None, :]) & (t0[None, :] < t1[:, None]) & (t0[:, None] < t1[None, :])
    return float(same.sum(dim=1).double().mean() / n)


def evaluate_split(aligned: torch.Tensor, ds, pad_us: float = 0.0, model=None) -> dict[str, float]:
    """The one evaluation rule (``evaluation.scoring``; rows by ``model``'s strategy, tokens flattened by
    default): ``e2t``/``t2e``/``mean`` R@1/5/10 with positives = same-sequence windows overlapping once widened
    by ``pad_us`` on each side; ``strict/*/R@1`` with the unwidened windows (for DSEC's non-overlapping
    windows, the pair itself), ``seq/R@1`` (any window of the same sequence), ``chance/R@1``, cosine, MSE."""
    from .scoring import rows, score_rows

    target, aligned = rows(model, ds.target_features.float()), rows(model, aligned.float())
    ks = tuple(k for k in (1, 5, 10) if k <= len(ds)) or (1,)
    samples = ds.samples_list()
    groups = ds.metadata_column("sequence") if samples and "sequence" in samples[0] else None
    out = score_rows(aligned, target, ks=ks, groups=groups, positive_windows=time_windows(ds, pad_us))
    strict = score_rows(aligned, target, ks=(1,), positive_windows=time_windows(ds, 0.0))
    out.update({f"strict/{k}": v for k, v in strict.items() if "/R@" in k})
    out["chance/R@1"] = chance_r1(ds, pad_us)
    return out


@torch.no_grad()
def _align(model, ds) -> torch.Tensor:
    return model(ds.event_features.float()).aligned_features.float()


def evaluate_run(model, data: DurationData, info: Mapping[str, Any], label_key: str = "scene",
                 pad_us: float = 0.0) -> dict[str, Any]:
    metrics = {}
    for split in ("validation", "test"):
        if split in data.splits:
            metrics[split] = evaluate_split(_align(model, data.splits[split]), data.splits[split], pad_us, model)
    names = info.get("class_names")
    truth = _labels(data.splits["test"], label_key) if names else None
    if truth:
        keep = [i for i, t in enumerate(truth) if t in names]
        if keep:
            pred = model.zero_shot_classify(data.splits["test"].event_features.float()[keep], names).labels.tolist()
            metrics["test"]["zero_shot_accuracy"] = sum(names[p] == truth[i] for p, i in zip(pred, keep)) / len(keep)
            metrics["test"]["zero_shot_chance"] = 1 / len(names)
    return metrics


def reference_rows(data: DurationData, pad_us: float = 0.0) -> dict[str, dict[str, float]]:
    """Untrained references on ``test``: ``unaligned`` (event features as they are, equal widths only)."""
    test = data.splits["test"]
    if test.event_dim != test.target_dim:
        return {}
    return {"unaligned": evaluate_split(test.event_features.float().flatten(1), test, pad_us)}


# -- the sweep -------------------------------------------------------------------------------------

@dataclass
class SweepStats:
    computed: int = 0
    cached: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)


def plan_runs(data: Mapping[str, DurationData], sizes: Mapping[str, Sequence[int]], strategies: Sequence[str],
              grids: Mapping[str, Mapping[str, Sequence[float]]], settings: TrainSettings,
              text_source: str | None = None, pad_us: float = 0.0) -> list[dict[str, Any]]:
    """Every run's config (JSON-able; its hash is the cache key)."""
    runs = []
    for duration, d in data.items():
        for strategy in strategies:
            for pairs in sizes[duration]:
                for params in grid_points(grids[strategy]):
                    cfg = {"duration": duration, "strategy": strategy, "pairs": int(pairs), "params": params,
                           "settings": asdict(settings) if strategy != "closed_form" else {"seed": settings.seed},
                           "data": d.fingerprint, "positive_pad_us": pad_us}
                    if strategy != "closed_form" and _needs_labels(strategy):
                        cfg["text_tower"] = text_source
                    runs.append(cfg)
    return runs


def _needs_labels(strategy: str) -> bool:
    from ..registry import get_strategy

    return get_strategy(strategy).needs_labels


def run_sweep(data: Mapping[str, DurationData], runs: Sequence[dict[str, Any]], cache_dir: str | Path, *,
              settings: TrainSettings, text_tower: TextTower | None = None, label_key: str = "scene",
              log_file: str | Path | None = None, progress: bool = True, pad_us: float = 0.0,
              on_record: Callable[[dict[str, Any]], None] | None = None) -> SweepStats:
    """Run (or reload) every planned run; each finished record is written to ``<cache_dir>/<key>.json``
    atomically and appended to ``log_file`` (JSONL)."""
    from ..utils.progress import progress_bar

    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    stats = SweepStats()
    bar = progress_bar(runs, desc="strategy map", unit="run", disable=not progress)
    for cfg in bar:
        key = run_key(cfg)
        path = cache / f"{key}.json"
        if path.is_file():
            record = json.loads(path.read_text())
            stats.cached += 1
        else:
            d = data[cfg["duration"]]
            model, info = fit_run(cfg["strategy"], d.subset(cfg["pairs"]), cfg["params"], settings,
                                  text_tower, label_key)
            record = {"key": key, **cfg, "epochs": info["epochs"], "seconds": info["seconds"],
                      "notes": info["notes"], "n_train_available": d.n_train,
                      "n": {s: len(ds) for s, ds in d.splits.items()},
                      "metrics": evaluate_run(model, d, info, label_key, pad_us)}
            atomic_write_json(path, record)
            if log_file is not None:
                with open(log_file, "a") as f:
                    f.write(json.dumps(record, sort_keys=True) + "\n")
            stats.computed += 1
        if on_record is not None:
            on_record(record)
        stats.records.append(record)
    return stats
