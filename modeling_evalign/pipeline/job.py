"""The main job (``make demo``): synthetic DSEC tree -> HF datasets -> CLIP features -> strategies -> one table.

Stages, each resumable (a finished stage's output is reused, an interrupted one is redone or resumed):

1. ``start_synthetic_dsec``: DSEC-format sequences made from scikit-image photographs (ESIM-style events), in
   worker processes while this one loads or pretrains the CLIP tower: the proxy CLIP pretrained here on the
   generator's RGB frames (``features.proxy_clip``, cached after its first build) unless ``--clip`` names a real
   one (``openai/clip-vit-large-patch14-336``). The proxy VLM of the downstream stage then builds in its own
   process (``downstream.stage.ProxyVlmBuild``) while stages 2-5 run on the other core;
2. ``DsecAlignmentBuilder``: the ``1s`` and ``200ms`` window datasets, split by sequence and stratified by
   scene, so every photograph has a training sequence and the held-out ones are new paths (``features``);
3. features: EventGPT-style event frames and RGB targets through the same frozen tower: patch tokens
   ``[N, P, D]`` (the token space) and the RGB frames' ``image_embeds`` (the embedding space) (``features``);
4. strategies (``strategies``): every strategy of the registry with a main-job recipe, through the Accelerate
   loop on the train split: ``lightweight``, ``contrastive``, ``triple_modal`` (token mode: event-image term on
   patch tokens, text terms through a text head) on features, then the image-level ones (LoRA on the vision
   tower, patch tokens); each feature-level checkpoint's ``training_info.json`` gets its ``test_metrics``;
5. evaluation on the held-out test sequences (``report``), beside the references: ``unaligned`` (event
   features as they are), ``closed_form`` (ridge, float64), ``reconstruction`` (FireNet frames -> the same
   tower: zero paired data) and ``rgb_reference`` (the RGB frame nearest the window's start as the query: the
   ceiling event features chase).

Then the downstream stage per duration (``downstream.stage``: the VLM answers questions from every condition's
tokens, acceptance, the draft's speedup) and ``figures``: ``summary.png`` (mean R@1 per strategy and duration
against chance and unaligned, the downstream accuracies) and one ``samples_<duration>.png`` per duration, their
data beside them, linked from ``results.md``.

Retrieval is strict: a query's only positive is its own window (index-matched), although neighbouring windows
of one sequence look alike; ``seq/R@1`` counts any window of the same sequence as a hit.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from ..registry import get_strategy, job_strategies
from ..utils.io_utils import atomic_write_json, atomic_write_text
from . import strategies as st
from .config import PipelineConfig, parse_args
from .features import build_splits, extract_splits, load_vision_tower, log, rgb_start_features, tower_path
from .report import (
    COLUMNS,
    StrategyRow,
    chance_line,
    evaluate_features,
    format_table,
    write_checkpoint_metrics,
)

__all__ = ["COLUMNS", "PipelineConfig", "StrategyRow", "format_table", "main", "run_pipeline"]


def _duration_rows(cfg: PipelineConfig, duration: str, tree: Path, out: Path, tower: str, vision,
                   started: float) -> list[StrategyRow]:
    from ..data.alignment_dataset import AlignmentDataset

    want = set(cfg.strategies)
    log(f"2/5 [{duration}] building the HF dataset ({time.perf_counter() - started:.0f} s)")
    splits = build_splits(cfg, tree, duration, out / "hf_cache")
    counts = {k: len(v) for k, v in splits.items()}
    log(f"    windows per split: {counts}")
    if "test" not in splits or "train" not in splits:
        raise ValueError(f"[{duration}] the split rule left no train or test sequence: {counts}")
    log(f"3/5 [{duration}] extracting features ({time.perf_counter() - started:.0f} s)")
    from ..hub.card_facts import describe_dsec_tree

    provenance = {"tower": tower, "revision": None if os.path.isdir(tower) else "main", "duration": duration,
                  "data": describe_dsec_tree(tree)}
    dirs, embed_dirs = extract_splits(splits, out / "features" / duration, vision, provenance)
    train = AlignmentDataset.from_directory(dirs["train"])
    test = AlignmentDataset.from_directory(dirs["test"])
    groups = test.metadata_column("sequence")
    log("    " + chance_line(duration, len(test), len(set(groups))))
    # token features [N, P, D]: the adapters map them token by token; retrieval compares them flattened
    ev, tg = test.event_features.float(), test.target_features.float().flatten(1)
    rows: list[StrategyRow] = []

    def add(strategy: str, queries: torch.Tensor, note: str = "") -> None:
        rows.append(StrategyRow(duration, strategy, evaluate_features(queries, tg, groups), note))

    log(f"4/5 [{duration}] baselines and training on {len(train)} pairs ({time.perf_counter() - started:.0f} s)")
    if "unaligned" in want:
        add("unaligned", ev.flatten(1))
    if "closed_form" in want:
        add("closed_form", st.aligned(st.closed_form(cfg, train), ev), f"ridge {cfg.ridge:g}")
    runs = out / "runs" / duration
    for strategy in job_strategies():  # every strategy of the registry with a main-job recipe
        if strategy not in want:
            continue
        spec = get_strategy(strategy)
        if spec.data_kind == "images":
            log(f"    {strategy}: LoRA on the vision tower ({time.perf_counter() - started:.0f} s)")
            add(strategy, st.train_image_strategy(cfg, strategy, splits, runs / strategy, tower, vision, tree,
                                                  duration), "LoRA q/v, last EventGPT frame, patch tokens")
            continue
        with st.quiet_loading():
            model = st.train_feature_strategy(cfg, strategy, dirs, runs / strategy, tower)
            zero_shot = st.zero_shot_accuracy(model, test) if getattr(model.config, "class_names", None) else None
        rows.append(StrategyRow(duration, strategy, evaluate_features(st.aligned(model, ev),
                                                                      st.targets(model, test.target_features),
                                                                      groups)))
        if zero_shot is not None:
            acc, chance = zero_shot
            rows[-1].note = f"patch tokens; zero-shot acc {100 * acc:.1f}% (chance {100 * chance:.1f}%)"
            rows[-1].metrics.update({"zero_shot/accuracy": acc, "zero_shot/chance": chance})
        write_checkpoint_metrics(runs / strategy / "final", rows[-1].metrics)
    # the embedding-space reference: RGB image_embeds targets (the space of the tower's text prompts)
    embed_test = AlignmentDataset.from_directory(embed_dirs["test"])
    embed_tg = embed_test.target_features.float()

    def add_embed(strategy: str, queries: torch.Tensor, note: str) -> None:
        rows.append(StrategyRow(duration, strategy, evaluate_features(queries, embed_tg, groups), note))

    log(f"5/5 [{duration}] zero-paired-data references ({time.perf_counter() - started:.0f} s)")
    if "reconstruction" in want and st.have_firenet(cfg):
        add("reconstruction", st.reconstruction_features(cfg, tree, test, tower, vision), "FireNet")
    if "rgb_reference" in want:
        add("rgb_reference", rgb_start_features(cfg, tree, test, vision), "RGB frame at window start")
        add_embed("rgb_reference/embed", rgb_start_features(cfg, tree, test, vision, space="embed"),
                  "embedding space; RGB frame at window start")
    return rows


class _Downstream:
    """The downstream stage (issue 19, ``modeling_evalign.downstream``): the VLM reads aligned event tokens."""

    def __init__(self, cfg: PipelineConfig, tower: str, vision, tree: Path, out: Path, root: str | None = None):
        from ..downstream.stage import load_vlm

        self.cfg, self.tower, self.vision, self.tree, self.out = cfg, tower, vision, tree, out
        self.vlm = load_vlm(cfg, tower, log=log, root=root)
        self.rows, self.speculative, self.seconds = [], {}, {}

    def run(self, duration: str, started: float) -> None:
        from ..downstream.stage import run_downstream

        log(f"+ [{duration}] downstream: the VLM reads aligned events ({time.perf_counter() - started:.0f} s)")
        splits = build_splits(self.cfg, self.tree, duration, self.out / "hf_cache")  # cached by the builder
        rows, spec, seconds = run_downstream(self.cfg, duration, self.tree, self.out, self.tower, self.vision,
                                             splits, self.vlm, log=log)
        self.rows += rows
        if spec is not None:
            self.speculative[duration] = spec
        self.seconds[duration] = seconds
        log(f"    [{duration}] downstream stage {seconds:.0f} s")

    def table(self) -> str:
        from ..downstream.report import format_downstream_table

        return "\n\n" + format_downstream_table(self.rows, self.speculative, self.seconds)

    def results(self) -> dict:
        return {"downstream": self.rows, "speculative": self.speculative, "downstream_s": self.seconds,
                "vlm": self.vlm.path}


def run_pipeline(cfg: PipelineConfig) -> list[StrategyRow]:
    from ..events.synthetic_dsec import start_synthetic_dsec

    torch.manual_seed(cfg.seed)
    stage_threads = cfg.torch_threads or torch.get_num_threads()
    torch.set_num_threads(1)  # while the tree's worker processes share the cores
    out = Path(cfg.output_dir)
    started = time.perf_counter()
    cpu0 = os.times()
    tree = out / "dsec"
    log(f"1/5 synthetic DSEC tree: {cfg.sequences} sequences x {cfg.seconds:g} s -> {tree} ({cfg.generator_workers} "
        f"processes, while this one loads or builds the towers, which need no tree)")
    tree_job = start_synthetic_dsec(tree, sequences=cfg.sequences, seconds=cfg.seconds, seed=cfg.seed,
                                    image_size=cfg.image_size, sensor_size=cfg.sensor_size, photos=cfg.photos,
                                    workers=cfg.generator_workers,
                                    on_sequence=lambda p, k, n: log(f"    tree {k}/{n}: {p.name} "
                                                                    f"({time.perf_counter() - started:.0f} s)"))
    vlm_job = None
    try:
        log(f"    CLIP tower: {cfg.clip or 'proxy (pretrained here)'}")
        tower = tower_path(cfg)
        vision = load_vision_tower(tower)
        if cfg.downstream and not cfg.vlm:  # the proxy VLM builds in its own process while the stages run
            from ..downstream.stage import ProxyVlmBuild

            vlm_job = ProxyVlmBuild(cfg, tower, log=log)
        tree_job.result()
        log(f"    tree ready: {time.perf_counter() - started:.0f} s")
        rows: list[StrategyRow] = []
        for duration in cfg.durations:
            # one thread while the VLM builds on the other core (oversubscribed OpenMP threads spin); results do
            # not depend on the thread count (the README's tables are identical at 1 and 2 threads)
            torch.set_num_threads(1 if vlm_job is not None and vlm_job.running() else stage_threads)
            rows += _duration_rows(cfg, duration, tree, out, tower, vision, started)
        torch.set_num_threads(stage_threads)
        downstream = None
        if cfg.downstream:
            if vlm_job is not None:
                log(f"+ the proxy VLM ({time.perf_counter() - started:.0f} s)")
            downstream = _Downstream(cfg, tower, vision, tree, out, root=vlm_job.result() if vlm_job else None)
            for duration in cfg.durations:
                downstream.run(duration, started)
    except BaseException:
        tree_job.cancel()  # sequences already written stay; a rerun writes the rest
        if vlm_job is not None:
            vlm_job.stop()  # the VLM build resumes from its checkpoint next time
        raise
    elapsed = time.perf_counter() - started
    cpu1 = os.times()
    cpu = {"user_s": round(cpu1.user - cpu0.user + cpu1.children_user - cpu0.children_user, 1),
           "system_s": round(cpu1.system - cpu0.system + cpu1.children_system - cpu0.children_system, 1)}
    table = format_table(rows) + (downstream.table() if downstream is not None else "")
    print(table, flush=True)
    log(f"done in {elapsed:.0f} s wall, {cpu['user_s']:.0f} s user CPU; results in {out / 'results.json'} and "
        f"{out / 'results.md'}")
    atomic_write_text(out / "results.md", table + "\n")
    atomic_write_json(out / "results.json", {"config": cfg.to_dict(), "tower": tower, "elapsed_s": elapsed,
                                             "cpu": cpu, "rows": [r.__dict__ for r in rows],
                                             **(downstream.results() if downstream is not None else {})})
    from .figures import write_figures

    write_figures(cfg, out, tower)  # summary.png at the top of the output, samples per duration, in results.md
    return rows


def main(argv: list[str] | None = None) -> int:
    from ..utils.cli import run_cli

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    def job(args) -> int:
        run_pipeline(parse_args(args))
        return 0

    return run_cli(job, argv, prog="python -m modeling_evalign.pipeline")


if __name__ == "__main__":
    raise SystemExit(main())
