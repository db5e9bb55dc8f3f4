#!/usr/bin/env python
"""Measured strategy map: sweep training-set size x strategy x hyperparameters, write a markdown report.

    python dataset_scripts/strategy_map.py --pipeline-dir outputs/demo --durations 200ms 1s --tokens \\
        --sizes 200ms=250,500,1000,2000,all 1s=100,200,400,700,all --out reports/strategy_map

Each ``--features DURATION=ROOT`` (or ``--pipeline-dir DIR``, meaning ``DIR/features/<duration>``) holds the
split folders the main job writes: ``train/``, ``validation/`` (optional) and ``test/`` feature directories,
split by whole sequences. For every duration, strategy (``closed_form`` ridge, ``lightweight`` adapter,
``contrastive`` features, ``triple_modal`` features with class labels from ``--label-key``), training-set
size and hyperparameter point (``--grid STRATEGY.PARAM=V1,V2`` overrides the defaults) one run trains on
nested random subsets of ``train``; the best point is chosen on ``validation`` and reported on ``test``.

Writes ``<out>/README.md`` (tables, crossovers), ``<out>/learning_curves.png`` (+ ``.png.json`` with the
plotted numbers), ``<out>/results.json`` and ``<out>/runs.jsonl`` (one line per run). Each run is cached in
``--cache-dir`` (default ``<out>/runs``) under a hash of its config and the data: rerunning after a kill skips
finished runs.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

from modeling_evalign.utils.cli import ArgumentParser, CLIError, parse_named_paths, run_cli

PROG = "strategy_map.py"


def _parse_features(items: list[str]) -> dict[str, str]:
    return parse_named_paths(items, "--features")


def _size_token(token: str) -> int | str:
    if token == "all":
        return token
    try:
        value = int(token)
    except ValueError:
        raise CLIError(f"--sizes: {token!r} is not an int or 'all'") from None
    if value < 2:
        raise CLIError(f"--sizes: {value} is below 2 training pairs")
    return value


def _parse_sizes(items: list[str], durations: list[str]) -> dict[str, list[int | str]]:
    """``250 500 all`` (every duration) and/or ``1s=100,200,all`` (one duration)."""
    common, per = [], {}
    for item in items:
        name, sep, values = item.partition("=")
        if sep:
            if name not in durations:
                raise CLIError(f"--sizes {item!r}: duration {name!r} is not one of {durations}")
            per[name] = [_size_token(v) for v in values.split(",") if v]
        else:
            common.append(_size_token(item))
    return {d: per.get(d, common) for d in durations}


def _parse_grid(items: list[str], strategies: list[str]) -> dict[str, dict[str, list[float]]]:
    from modeling_evalign.evaluation.strategy_map import DEFAULT_GRIDS, PARAMS

    grids = {s: {k: list(v) for k, v in DEFAULT_GRIDS[s].items()} for s in strategies}
    for item in items:
        lhs, sep, values = item.partition("=")
        strategy, dot, param = lhs.partition(".")
        if not sep or not dot:
            raise CLIError(f"--grid entries must look like STRATEGY.PARAM=V1,V2, got {item!r}")
        if strategy not in PARAMS:
            raise CLIError(f"--grid {item!r}: unknown strategy {strategy!r}, expected one of {list(PARAMS)}")
        if param not in PARAMS[strategy]:
            raise CLIError(f"--grid {item!r}: {strategy} has no parameter {param!r}, expected one of "
                           f"{list(PARAMS[strategy])}")
        try:
            parsed = [float(v) for v in values.split(",") if v]
        except ValueError:
            raise CLIError(f"--grid {item!r}: values must be numbers") from None
        if not parsed or any(v < 0 or (param != "width" and v == 0) for v in parsed):
            raise CLIError(f"--grid {item!r}: expected positive numbers (width may be 0 = linear)")
        if strategy in grids:
            grids[strategy][param] = parsed
    return grids


def _text_tower(args, data, cache_dir: Path):
    """(TextTower or None, note) for triple_modal: ``--text-model`` (a CLIP directory or repo id), or with
    ``--tiny-text-tower`` a random tiny tower whose prompt embeddings act as fixed class prototypes."""
    from transformers import AutoTokenizer, CLIPTextModelWithProjection

    from modeling_evalign.evaluation.strategy_map import TextTower

    target_dim = next(iter(data.values())).splits["train"].target_dim
    if args.text_model:
        from transformers.utils import logging as hf_logging

        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # a full CLIPModel directory: its vision weights are unused here
        try:
            model = CLIPTextModelWithProjection.from_pretrained(args.text_model)
        finally:
            hf_logging.set_verbosity(level)
        if model.config.projection_dim == target_dim:
            tok = AutoTokenizer.from_pretrained(args.text_model)
            return TextTower(model, tok, str(args.text_model)), f"triple_modal text tower: {args.text_model}"
        if not args.tiny_text_tower:
            raise CLIError(f"--text-model {args.text_model}: projection_dim={model.config.projection_dim} but the "
                           f"target features have width {target_dim}; pass --tiny-text-tower to fall back")
    if not args.tiny_text_tower:
        return None, "triple_modal without a text tower: event-image term only"
    from modeling_evalign.triple_modal.configuration_triple_modal import TripleModalAlignmentConfig
    from modeling_evalign.triple_modal.text_tower import save_tiny_text_tower

    names = set()
    for d in data.values():
        for ds in d.splits.values():
            try:
                names.update(str(v) for v in ds.metadata_column(args.label_key))
            except KeyError:
                return None, f"no {args.label_key!r} labels: triple_modal trains the event-image term only"
    cfg = TripleModalAlignmentConfig()
    texts = [t.format(n) for n in sorted(names) for t in (cfg.event_prompt_template, cfg.image_prompt_template)]
    path = cache_dir / f"tiny_text_tower_{target_dim}"
    if not (path / "config.json").is_file():
        save_tiny_text_tower(path, texts, projection_dim=target_dim, seed=args.seed)
    source = f"tiny-random(seed={args.seed}, dim={target_dim}, classes={sorted(names)})"
    note = ("triple_modal text tower: a random tiny CLIP text tower (its prompt embeddings are fixed random class "
            "prototypes, not language); classes from " + repr(args.label_key))
    return TextTower(CLIPTextModelWithProjection.from_pretrained(path), AutoTokenizer.from_pretrained(path),
                     source), note


def _projection(name: str):
    """``x -> visual_projection(post_layernorm(x))`` of a CLIP tower (raw CLS / pooled last-layer features ->
    ``image_embeds``), and an id for the cache key."""
    import hashlib

    from modeling_evalign.features.towers import load_clip_vision_tower

    tower = load_clip_vision_tower(name, with_projection=True, what="--project")
    digest = hashlib.sha1(b"".join(p.detach().numpy().tobytes() for p in tower.visual_projection.parameters()))
    return (lambda x: tower.visual_projection(tower.vision_model.post_layernorm(x))), f"{name}:{digest.hexdigest()[:12]}"


def build_parser() -> ArgumentParser:
    from modeling_evalign.evaluation.strategy_map import STRATEGIES

    ap = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--features", nargs="+", help="DURATION=ROOT with ROOT/{train,validation,test}")
    src.add_argument("--pipeline-dir", help="main-job output folder (features under features/<duration>)")
    ap.add_argument("--durations", nargs="+", default=["200ms", "1s"], help="with --pipeline-dir")
    ap.add_argument("--out", required=True, help="report folder")
    ap.add_argument("--cache-dir", default=None, help="per-run cache (default <out>/runs)")
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    ap.add_argument("--sizes", nargs="+", default=["250", "500", "1000", "2000", "5000"],
                    help="training-set sizes: N, 'all', or DURATION=N1,N2,... (capped at the train split)")
    ap.add_argument("--grid", nargs="*", default=[], help="STRATEGY.PARAM=V1,V2 (params: lr, temperature, width, ridge)")
    ap.add_argument("--steps", type=int, default=500, help="optimizer steps aimed at per trained run")
    ap.add_argument("--min-epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--project", default=None, metavar="CLIP",
                    help="map raw last-layer features into CLIP's image-embedding space with this tower's "
                         "post-layernorm + visual projection (the main job's feature space)")
    ap.add_argument("--tokens", action="store_true",
                    help="keep token features [N, P, D] (the main job's patch tokens): strategies map them token by "
                         "token and retrieval compares the flattened tokens (default: mean-pool them to [N, D])")
    ap.add_argument("--positive-pad-us", type=float, default=0.0,
                    help="widen every window by this many µs on each side before the overlap test of retrieval "
                         "positives (0: overlapping windows only; DSEC windows of one duration do not overlap)")
    ap.add_argument("--label-key", default="scene", help="per-sample metadata key with class labels (triple_modal)")
    ap.add_argument("--text-model", default=None, help="CLIP model (directory or repo id) for triple_modal's text tower")
    ap.add_argument("--tiny-text-tower", action="store_true",
                    help="random tiny text tower as class prototypes (when no CLIP text tower of the right width)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (small heads train fastest on one thread of a shared machine)")
    ap.add_argument("--findings", default=None, help="markdown file with the reader's summary, placed first in the report")
    ap.add_argument("--note", action="append", default=[], help="a line for the report's notes (e.g. how the data was made)")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    for name in ("steps", "min_epochs", "batch_size", "threads"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.positive_pad_us < 0:
        raise CLIError(f"--positive-pad-us must be >= 0, got {args.positive_pad_us}")
    if args.tokens and args.project:
        raise CLIError("--tokens keeps the features as they are: drop --project")
    if args.features:
        roots = _parse_features(args.features)
    else:
        roots = {d: str(Path(args.pipeline_dir) / "features" / d) for d in args.durations}
    durations = list(roots)
    sizes_req = _parse_sizes(args.sizes, durations)
    grids = _parse_grid(args.grid, args.strategies)
    out = Path(args.out)
    cache = Path(args.cache_dir) if args.cache_dir else out / "runs"

    import torch

    from modeling_evalign.evaluation import strategy_map as sm
    from modeling_evalign.evaluation import strategy_map_report as rep
    from modeling_evalign.utils.io_utils import atomic_write_json, atomic_write_text

    findings = None
    if args.findings:
        path = Path(args.findings)
        if not path.is_file():
            raise CLIError(f"--findings {path} does not exist")
        findings = path.read_text()
    started = time.perf_counter()
    transform, transform_id = (None, None) if not args.project else _projection(args.project)
    data = {d: sm.load_duration(d, root, seed=args.seed, transform=transform, transform_id=transform_id,
                                tokens=args.tokens) for d, root in roots.items()}
    widths = {d: (x.splits["train"].event_dim, x.splits["train"].target_dim) for d, x in data.items()}
    sizes = {d: sm.resolve_sizes(sizes_req[d], data[d].n_train) for d in durations}
    settings = sm.TrainSettings(steps=args.steps, min_epochs=args.min_epochs, batch_size=args.batch_size,
                                seed=args.seed)
    out.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    notes = [*args.note, f"feature widths (event, target): {widths}"]
    tower = None
    if "triple_modal" in args.strategies:
        tower, note = _text_tower(args, data, cache)
        notes.append(note)
    pad = args.positive_pad_us
    runs = sm.plan_runs(data, sizes, args.strategies, grids, settings, tower.source if tower else None, pad)
    print(f"{PROG}: {len(runs)} runs over {durations} (sizes {sizes})", file=sys.stderr, flush=True)
    torch.set_num_threads(args.threads)
    stats = sm.run_sweep(data, runs, cache, settings=settings, text_tower=tower, label_key=args.label_key,
                         log_file=out / "runs.jsonl", progress=not args.no_progress, pad_us=pad)
    elapsed = time.perf_counter() - started

    best = sm.select_best(stats.records)
    curves = rep.learning_curves(best, durations, args.strategies)
    crossover = rep.crossover_rows(curves, n_test={d: len(x.splits["test"]) for d, x in data.items()})
    references = {d: sm.reference_rows(x, pad) for d, x in data.items()}
    chance = {d: sm.chance_r1(x.splits["test"], pad) for d, x in data.items()}
    plot = rep.plot_learning_curves(curves, references, chance, out / "learning_curves.png")
    run_seconds = sum(r["seconds"] for r in stats.records)
    notes.append(f"this invocation: {stats.computed} runs trained, {stats.cached} reloaded from {cache}; "
                 f"sum of per-run fit times {run_seconds / 60:.1f} min")
    command = "python dataset_scripts/strategy_map.py " + " ".join(shlex.quote(a) for a in argv)
    markdown = rep.render_markdown(
        best=best, records=stats.records, curves=curves, crossover=crossover, references=references, chance=chance,
        sizes=sizes, durations=durations, strategies=args.strategies, grids=grids, settings=settings,
        plot_name=plot.name, command=command, pad_us=pad, findings=findings, elapsed_s=elapsed if stats.cached == 0 else None, notes=notes)
    atomic_write_text(out / "README.md", markdown)
    atomic_write_text(out / "runs.jsonl", "".join(
        json.dumps(r, sort_keys=True) + "\n" for r in stats.records))
    best_rows = [{k: v for k, v in r.items() if k != "_score"} | {"selection_score": r["_score"]}
                 for r in best.values()]
    atomic_write_json(out / "results.json", {
        "command": command, "durations": durations, "sizes": sizes, "strategies": args.strategies, "grids": grids,
        "settings": asdict(settings), "elapsed_s": elapsed,
        "computed": stats.computed, "cached": stats.cached, "best": best_rows, "curves": curves,
        "crossovers": crossover, "references": references, "chance": chance, "notes": notes})
    print(f"{PROG}: {stats.computed} runs trained, {stats.cached} reloaded, {elapsed:.0f} s; wrote {out / 'README.md'}",
          file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main, prog=PROG))
