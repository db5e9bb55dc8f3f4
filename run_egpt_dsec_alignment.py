#!/usr/bin/env python
"""The product brief's DSEC script: per duration, windows -> features -> training -> test metrics -> checkpoint.

    python run_egpt_dsec_alignment.py --durations 200ms 500ms 1s 2s 4s 5s 10s 20s --strategy contrastive \\
        --num_epochs 20 --batch_size 32
    python run_egpt_dsec_alignment.py --durations 200ms --strategy lightweight --num_epochs 10

DSEC root: ``--dsec_data_dir``, else ``$EVALIGN_DSEC_ROOT``, else ``./data/dsec``. Writes
``<output_dir>/alignment_<duration>/`` (default ``checkpoints/``: an HF directory for ``AutoModel``, its
training_info.json and card, and ``features/``) and ends with one table across durations; see
``modeling_evalign.pipeline.dsec_alignment``. Towers: ``--event_model``/``--target_model``: a repo id or path
(``openai/clip-vit-large-patch14-336``), ``proxy`` (the default: the proxy CLIP pretrained here offline, built
once in ~1-2 min and cached) or ``tiny`` (random, for tests). Every train_accelerate.py flag works too.

Training-only uses keep train_accelerate.py's behaviour (output ``<output_dir>/<duration>/final``):
``--train_dir features/{duration}/train`` (feature directories) and the image-level strategies
(``contrastive_image``, ``triple_modal_image``), which train on the DSEC images directly.
"""

from __future__ import annotations

import dataclasses
import sys

from modeling_evalign.utils.cli import ArgumentParser, run_cli

PROG = "run_egpt_dsec_alignment.py"


def _parser():
    from transformers import HfArgumentParser

    from modeling_evalign.features.extraction import EVENT_POOLINGS, TARGET_TOKENS
    from modeling_evalign.pipeline.dsec_alignment import DsecJobOptions
    from modeling_evalign.training.config import TrainConfig

    class Parser(ArgumentParser, HfArgumentParser):  # HF's flags per TrainConfig field, one-line errors
        pass

    parser = Parser(TrainConfig, prog=PROG, description=__doc__.split("\n\n")[0])
    parser.set_defaults(strategy="contrastive", output_dir="checkpoints", learning_rate=1e-4)  # the brief's
    d = DsecJobOptions()
    job = parser.add_argument_group("DSEC job (towers, feature extraction, split by sequence)")

    def add(name, **kw):
        job.add_argument(f"--{name}", f"--{name.replace('_', '-')}", dest=name, **kw)

    add("event_model", default=d.event_model, help="event tower: repo id, path, 'proxy' (default) or 'tiny'")
    add("target_model", default=None, help="target tower (default: the event tower)")
    add("model_revision", default=None, help="revision of the towers")
    add("event_pooling", default=d.event_pooling, choices=EVENT_POOLINGS)
    add("event_layer", type=int, default=d.event_layer)
    add("target_tokens", default=d.target_tokens, choices=TARGET_TOKENS)
    add("target_layer", type=int, default=d.target_layer, help="-2 = penultimate (Video-LLaVA)")
    add("extract_batch_size", type=int, default=d.extract_batch_size, help="windows per tower forward pass")
    add("split_val_fraction", type=float, default=d.split_val_fraction, help="validation share of the sequences")
    add("split_test_fraction", type=float, default=d.split_test_fraction, help="held-out test share of sequences")
    add("split_seed", type=int, default=d.split_seed)
    add("num_proc", type=int, default=None, help="parallel builder jobs")
    add("device", default=None, choices=["cpu", "cuda"], help="default: cuda when available")
    return parser, TrainConfig, DsecJobOptions


def main(argv: list[str] | None = None) -> int:
    from modeling_evalign.registry import get_strategy
    from modeling_evalign.training.config import DSEC_DURATIONS

    parser, TrainConfig, DsecJobOptions = _parser()
    args = vars(parser.parse_args(argv))
    bad = [d for d in args["durations"] if d not in DSEC_DURATIONS]
    if bad:
        parser.error(f"argument --durations: invalid choice {bad[0]!r} (choose from {', '.join(DSEC_DURATIONS)})")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    options = DsecJobOptions(**{k: v for k, v in args.items() if k not in names})
    for name in ("extract_batch_size",):
        if getattr(options, name) < 1:
            parser.error(f"argument --{name}: expected an integer >= 1, got {getattr(options, name)}")
    from modeling_evalign.utils.checks import check_device, check_tower_names

    check_device("--device", options.device)  # before any data or tower work
    check_tower_names(**{"--event_model": options.event_model, "--target_model": options.target_model})
    fields = {k: v for k, v in args.items() if k in names}
    fields["durations"] = fields["durations"] or ["1s"]  # the brief's default duration
    try:
        spec = get_strategy(fields["strategy"])
    except ValueError as err:
        parser.error(f"argument --strategy: {err}")
    if fields["train_dir"] or spec.data_kind == "images":  # train_accelerate.py's behaviour
        from modeling_evalign.pipeline.dsec_alignment import resolve_dsec_root
        from modeling_evalign.training.loop import run

        if not fields["train_dir"]:
            fields["dsec_data_dir"] = str(resolve_dsec_root(fields["dsec_data_dir"]))
        elif not args["durations"] and "{duration}" not in fields["train_dir"]:
            fields["durations"] = []  # one run on the given feature directories
        fields["cpu"] = fields["cpu"] or options.device == "cpu"
        results = run(TrainConfig(**fields))
        for result in results:
            status = "interrupted (resumable)" if result.interrupted else "finished"
            print(f"[evalign] {result.output_dir}: {status} at step {result.global_step}", flush=True)
        if any(r.signalled for r in results):  # as train_accelerate.py: a SIGTERM-stopped run is not a success
            print(f"{PROG}: stopped by SIGTERM after saving a checkpoint; rerun with --resume_from_checkpoint latest",
                  file=sys.stderr, flush=True)
            return 143
        return 0
    from modeling_evalign.pipeline.dsec_alignment import resolve_dsec_root, run_job

    fields["dsec_data_dir"] = str(resolve_dsec_root(fields["dsec_data_dir"]))  # fail before any tower is built
    run_job(TrainConfig(**fields), options)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog=PROG))
