"""The brief's per-duration DSEC job (``run_egpt_dsec_alignment.py``): windows -> features -> training ->
held-out evaluation -> ``<output_dir>/alignment_<duration>/``, then one table across durations.

Per duration, every stage is cached or resumable, so rerunning the same command after a kill continues:

1. windows: :class:`~modeling_evalign.data.dsec_builder.DsecAlignmentBuilder` (HF Datasets cache under
   ``<output_dir>/dsec_cache``), split by sequence into train / validation / test;
2. features: frozen CLIP towers (``--event_model``/``--target_model``: a repo id, a path, ``proxy``, the
   default: the proxy CLIP pretrained here offline, built once and cached; or ``tiny``, a random tower for
   tests) -> ``alignment_<duration>/features/<split>/`` (resumable shards);
3. training: the Accelerate loop (:func:`modeling_evalign.training.loop.train`) in ``runs/<duration>/``
   (checkpoints; ``resume_from_checkpoint latest``);
4. evaluation on the test sequences (never seen in training): R@1/5/10 both directions with the window
   itself as the only positive, ``seq/R@1`` (any window of the same sequence counts), cosine and MSE.

``alignment_<duration>/`` is a Hugging Face directory (``AutoModel.from_pretrained`` loads it; module files
bundled for ``trust_remote_code``) plus ``training_info.json`` (with ``test_metrics``), ``README.md`` (the
card) and ``results.json`` (written last: its presence marks the duration finished).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..hub.paths import strip_machine_paths
from ..utils.io_utils import atomic_write_json, atomic_write_text

DSEC_ROOT_ENV = "EVALIGN_DSEC_ROOT"
DEFAULT_DSEC_ROOT = "data/dsec"
SYNTHETIC_COMMAND = ("python dataset_scripts/make_synthetic_dsec.py --out data/dsec --sequences 4 --seconds 22 "
                     "--sensor-size 320x240 --image-size 480x360")
JOB_FILE = "job.json"
RESULTS_FILE = "results.json"
METRIC_COLUMNS = ("e2t/R@1", "e2t/R@5", "e2t/R@10", "t2e/R@1", "t2e/R@5", "t2e/R@10", "seq/R@1", "cosine", "mse")


class EmptySplitError(ValueError):
    """The split by sequence left a duration without training or test windows (too few or too short sequences)."""


@dataclass
class DsecJobOptions:
    """What the job adds to :class:`~modeling_evalign.training.config.TrainConfig`: towers, extraction, split."""

    event_model: str = "proxy"
    target_model: str | None = None
    model_revision: str | None = None
    event_pooling: str = "pooled"
    event_layer: int = -2
    target_tokens: str = "mean"
    target_layer: int = -2
    extract_batch_size: int = 16
    split_val_fraction: float = 0.15
    split_test_fraction: float = 0.25
    split_seed: int = 0
    num_proc: int | None = None
    device: str | None = None

    def extraction_options(self):
        from ..features.extraction import ExtractionOptions

        return ExtractionOptions(event_pooling=self.event_pooling, event_layer=self.event_layer,
                                 target_tokens=self.target_tokens, target_layer=self.target_layer)


@dataclass
class DurationResult:
    duration: str
    strategy: str
    counts: dict[str, int]
    metrics: dict[str, float]
    output_dir: str  # relative to the job's --output_dir (results.json sits in the checkpoint: no machine path)
    train_time_s: float = 0.0
    cached: bool = False
    notes: list[str] = field(default_factory=list)


def _log(msg: str) -> None:
    print(f"[evalign] {msg}", flush=True)


def resolve_dsec_root(given: str | None) -> Path:
    """``--dsec_data_dir``, else ``$EVALIGN_DSEC_ROOT``, else ``./data/dsec``; FileNotFoundError (one line,
    naming all three and the command that writes a synthetic tree) when the chosen one does not exist."""
    env = os.environ.get(DSEC_ROOT_ENV)
    root = Path(given or env or DEFAULT_DSEC_ROOT)
    if root.is_dir():
        return root
    source = "--dsec_data_dir" if given else (f"${DSEC_ROOT_ENV}" if env else "the default ./data/dsec")
    raise FileNotFoundError(
        f"no DSEC tree at {str(root)!r} (from {source}; set --dsec_data_dir or ${DSEC_ROOT_ENV}, default "
        f"./{DEFAULT_DSEC_ROOT}); to write a synthetic one: {SYNTHETIC_COMMAND}"
    )


def load_tower(name: str, revision: str | None = None, device: str = "cpu"):
    """A frozen CLIP vision tower: ``proxy`` (the proxy CLIP pretrained here, built once and cached, see
    ``features.proxy_clip``), ``tiny`` (random, from config: tests) or a repo id / path."""
    from ..features.extraction import load_clip_vision, tiny_clip_vision

    if name == "tiny":  # the demo's tiny tower: sparse event frames survive 128 px far better than 64 px
        model = tiny_clip_vision(seed=0, image_size=128, patch_size=16)
    else:
        from transformers.utils import logging as hf_logging

        if name == "proxy":
            from ..features.proxy_clip import ensure_proxy_clip

            name = str(ensure_proxy_clip(log=_log))
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # a full CLIP checkpoint's text weights are unused here: no load report
        try:
            model = load_clip_vision(name, revision=revision)
        finally:
            hf_logging.set_verbosity(verbosity)
    return model.to(device)


def _fingerprint(config, options: DsecJobOptions) -> dict[str, Any]:
    """Settings a finished or half-finished duration must share with this run to be reused."""
    keep = ("strategy", "num_epochs", "batch_size", "learning_rate", "weight_decay", "warmup_steps", "seed",
            "model_config", "closed_form_init", "label_key", "text_model")
    return {"train": {k: getattr(config, k) for k in keep}, "job": dataclasses.asdict(options) | {"num_proc": None,
                                                                                                   "device": None}}


def _check_job(work: Path, fingerprint: dict[str, Any]) -> None:
    path = work / JOB_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        diff = sorted(f"{part}.{k}" for part in fingerprint for k in set(old.get(part, {})) | set(fingerprint[part])
                      if old.get(part, {}).get(k) != fingerprint[part].get(k))
        if diff:
            raise ValueError(
                f"{work} holds a run with other settings ({', '.join(diff)}): use another --output_dir or delete "
                f"{work} and the matching alignment_<duration> directory"
            )
    else:
        atomic_write_json(path, fingerprint)


def window_splits(root: Path, duration: str, cache_dir: Path, *, num_proc: int | None = None, hint: str = "",
                  **builder_kwargs) -> dict[str, Any]:
    """Stage 1 of both front-ends (this script and ``python -m modeling_evalign.pipeline``): the duration's
    window datasets per split, cached by HF Datasets; ``builder_kwargs`` go to ``DsecAlignmentBuilder``
    (split fractions, seed, scene stratification, representations). EmptySplitError when no train or test
    split is left (``hint``: the settings that chose the split, for the message)."""
    from ..data.dsec_builder import DsecAlignmentBuilder

    builder = DsecAlignmentBuilder(config_name=duration, data_dir=str(root), cache_dir=str(cache_dir),
                                   **builder_kwargs)
    builder.download_and_prepare(num_proc=num_proc)
    counts = {str(s): builder.info.splits[s].num_examples for s in builder.info.splits}
    # a split of sequences shorter than one window holds no example (and as_dataset refuses it)
    splits = {s: builder.as_dataset(split=s) for s, n in counts.items() if n}
    if "train" not in splits or "test" not in splits:
        raise EmptySplitError(
            f"[{duration}] the split by sequence left no {'train' if 'train' not in splits else 'test'} split "
            f"({counts} windows{'; ' + hint if hint else ''}): the tree under {root} needs at least 3 sequences "
            f"longer than {duration}"
        )
    return splits


def build_windows(root: Path, duration: str, cache_dir: Path, options: DsecJobOptions) -> dict[str, Any]:
    """The brief's windows: :func:`window_splits` with the ``--split_*`` options."""
    return window_splits(root, duration, cache_dir, num_proc=options.num_proc,
                         hint=f"split_test_fraction={options.split_test_fraction}, split_val_fraction="
                              f"{options.split_val_fraction}",
                         val_fraction=options.split_val_fraction, test_fraction=options.split_test_fraction,
                         split_seed=options.split_seed)


def evaluate_model(model, test) -> dict[str, float]:
    """Held-out metrics of ``model`` on an AlignmentDataset by the strategy's evaluation rule (the main job's:
    ``evaluation.scoring``): R@1/5/10 both directions (the window itself is the only positive), ``seq/R@1``
    (any window of the same sequence counts), cosine and MSE."""
    from ..evaluation.scoring import score_model

    return score_model(model, test, groups_key="sequence")


def _publish(final: Path, dest: Path) -> None:
    """Copy the run's ``final/`` into ``dest`` file by file (temp name, then rename)."""
    for item in final.iterdir():
        tmp = dest / f".{item.name}.tmp"
        if item.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(item, tmp)
            shutil.rmtree(dest / item.name, ignore_errors=True)
        else:
            shutil.copy2(item, tmp)
        os.replace(tmp, dest / item.name)


def _synthetic(info: dict[str, Any]) -> bool:
    """The recordings were evalign's synthetic ones (as the training run recorded them for the card)."""
    return bool((((info.get("card") or {}).get("data") or {}).get("recordings") or {}).get("synthetic"))


def _card(dest: Path, config, duration: str, metrics: dict[str, float], info: dict[str, Any], base_model) -> None:
    try:
        from ..hub.cards import write_model_card

        write_model_card(dest, model_id=config.hub_model_id or f"evalign/{config.strategy}-dsec-{duration}",
                         strategy=config.strategy, metrics={duration: metrics}, training_info=info,
                         datasets=[] if _synthetic(info) else ["dsec"], base_model=base_model, split="test")
    except ImportError as exc:  # plotting extras missing: the card is optional, the checkpoint is not
        _log(f"    model card skipped: {exc}")


def run_duration(config, options: DsecJobOptions, root: Path, duration: str, encoders) -> DurationResult:
    """One duration end to end (see the module docstring); ``config`` is the parsed TrainConfig."""
    from transformers import AutoModel

    from ..data.alignment_dataset import AlignmentDataset
    from ..features.extraction import extract_features
    from ..training.config import TrainConfig
    from ..training.data import load_data
    from ..training.loop import TRAINING_INFO_NAME, train

    out = Path(config.output_dir)
    dest, work = out / f"alignment_{duration}", out / "runs" / duration
    fingerprint = _fingerprint(config, options)
    if (dest / RESULTS_FILE).is_file() and (work / JOB_FILE).is_file():
        _check_job(work, fingerprint)
        done = json.loads((dest / RESULTS_FILE).read_text())
        _log(f"[{duration}] finished earlier: {dest}")
        return DurationResult(**{**done, "cached": True})
    work.mkdir(parents=True, exist_ok=True)
    _check_job(work, fingerprint)
    started = time.perf_counter()
    _log(f"[{duration}] 1/4 windows")
    splits = build_windows(root, duration, out / "dsec_cache", options)
    counts = {k: len(v) for k, v in splits.items()}
    _log(f"    windows per split: {counts}")
    _log(f"[{duration}] 2/4 features ({options.event_model} -> {options.target_model or options.event_model})")
    dirs = {}
    for split, ds in splits.items():
        dirs[split] = dest / "features" / split
        extract_features(ds, dirs[split], encoders[0], encoders[1], options=options.extraction_options(),
                         split=split, batch_size=options.extract_batch_size)
    notes: list[str] = []
    _log(f"[{duration}] 3/4 training {config.strategy}")
    run_config = TrainConfig(**{
        **config.to_dict(), "output_dir": str(work), "train_dir": str(dirs["train"]),
        "val_dir": str(dirs["validation"]) if "validation" in dirs else None, "dsec_data_dir": None,
        "durations": [], "resume_from_checkpoint": config.resume_from_checkpoint or "latest",
        "cpu": config.cpu or options.device == "cpu", "push_to_hub": False,
    })
    final = work / "final"
    if not (final / "config.json").is_file():
        data = load_data(run_config, duration)  # no validation sequence: the tail of train is held out
        if run_config.batch_size > len(data.train):
            notes.append(f"batch_size {config.batch_size} -> {len(data.train)} (only {len(data.train)} "
                         "training windows)")
            _log(f"    {notes[-1]}")
            run_config = dataclasses.replace(run_config, batch_size=len(data.train))
        result = train(run_config, duration=duration, data=data)
        if result.interrupted:
            raise KeyboardInterrupt  # stopped with a checkpoint (SIGTERM): rerun the command to resume
    _publish(final, dest)
    _log(f"[{duration}] 4/4 evaluation on {counts['test']} held-out test windows")
    test = AlignmentDataset.from_directory(dirs["test"])
    metrics = evaluate_model(AutoModel.from_pretrained(dest), test)
    info = json.loads((dest / TRAINING_INFO_NAME).read_text())
    info.update(test_metrics=metrics, window_counts=counts, job=fingerprint["job"], notes=notes,
                retrieval_positives="strict: the window itself (R@K); seq/R@1: any window of the same sequence")
    if isinstance(info.get("card"), dict):  # the card reports these test metrics: its split, n and chance
        from ..hub.card_facts import eval_facts

        info["card"]["evaluation"] = eval_facts(metrics, counts["test"], "test", info["retrieval_positives"])
    info = strip_machine_paths(info, dest)
    atomic_write_json(dest / TRAINING_INFO_NAME, info)
    tower = options.target_model or options.event_model
    base_model = None if tower in ("tiny", "proxy") else tower
    _card(dest, config, duration, metrics, info, base_model)
    result = DurationResult(duration, config.strategy, counts, metrics, dest.name,
                            round(time.perf_counter() - started, 1), notes=notes)
    atomic_write_json(dest / RESULTS_FILE, dataclasses.asdict(result))  # last: marks the duration finished
    return result


def results_table(results: list[DurationResult]) -> str:
    """The brief's results as rows of the one table formatter (``report.format_table``), one row per duration:
    window counts, held-out metrics (recalls in percent), notes."""
    from .report import StrategyRow, format_table

    counts = ("train", "val", "test")
    rows = [StrategyRow(r.duration, r.strategy, {**r.metrics, **{c: int(r.counts.get({"val": "validation"}.get(c, c), 0))
                                                                  for c in counts}}, "; ".join(r.notes))
            for r in results]
    return format_table(rows, counts + METRIC_COLUMNS)


def run_job(config, options: DsecJobOptions) -> list[DurationResult]:
    """Every duration of ``config.durations`` in turn, then the table (``<output_dir>/results.md|json``)."""
    root = resolve_dsec_root(config.dsec_data_dir)
    device = options.device or ("cuda" if torch.cuda.is_available() and not config.cpu else "cpu")
    started = time.perf_counter()
    event = load_tower(options.event_model, options.model_revision, device)
    target = event if options.target_model in (None, options.event_model) else load_tower(
        options.target_model, options.model_revision, device)
    results, skipped = [], {}
    for duration in config.durations:
        try:
            results.append(run_duration(config, options, root, duration, (event, target)))
        except EmptySplitError as err:  # e.g. 20 s windows on short sequences: the other durations still run
            if len(skipped) + 1 == len(config.durations):
                raise
            skipped[duration] = str(err)
            _log(f"[{duration}] skipped: {err}")
    table = results_table(results) + "".join(f"\n\nskipped {d}: {why}" for d, why in skipped.items())
    out = Path(config.output_dir)
    print(table, flush=True)
    atomic_write_text(out / "results.md", table + "\n")
    atomic_write_json(out / "results.json", {"elapsed_s": round(time.perf_counter() - started, 1), "skipped": skipped,
                                             "results": [dataclasses.asdict(r) for r in results]})
    _log(f"done in {time.perf_counter() - started:.0f} s: {', '.join(str(out / r.output_dir) for r in results)}")
    return results
