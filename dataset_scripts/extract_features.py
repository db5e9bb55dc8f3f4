#!/usr/bin/env python
"""Extract frozen-CLIP features of the DSEC alignment windows into feature directories (one per split).

    python dataset_scripts/extract_features.py --data-dir /data/dsec/train --duration 1s --out ./features/1s \
        --event-model openai/clip-vit-large-patch14-336 --target-model openai/clip-vit-large-patch14 \
        --event-pooling tokens --target-tokens patch --target-layer -2 --dtype bfloat16 --num-workers 8

Several processes (each takes a disjoint set of shards; the merged files equal a one-process run's bit for bit):

    accelerate launch --multi_gpu --num_processes 4 dataset_scripts/extract_features.py ...
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \
        --mixed_precision no --dynamo_backend no dataset_scripts/extract_features.py ...   # 2 CPU processes

``--source dsec`` (default) reads the windows straight from the recordings (``features.dsec_windows``: same
windows, order and split rule as the builder, no HF Datasets cache); ``--source builder`` prepares and
reads the ``DsecAlignmentBuilder`` cache (``--cache-dir``). ``--event-model tiny`` (and ``--target-model
tiny``) use a randomly initialised tiny CLIP tower (tests, demo). Writes ``<out>/<split>/{event,target}_
features.safetensors`` + ``metadata.json`` (the format read by ``AlignmentDataset.from_directory``).
Resumable: rerun the same command after a kill (with any number of processes). Prints windows/s at the end.
"""

from __future__ import annotations

from modeling_evalign.data.cli import add_builder_arguments, builder_kwargs
from modeling_evalign.utils.cli import ArgumentParser, CLIError, run_cli

DTYPE_CHOICES = ["float32", "bfloat16", "float16"]


def _encoder(name: str, revision: str | None, device, what: str):
    from modeling_evalign.features.extraction import load_clip_vision, tiny_clip_vision

    model = tiny_clip_vision() if name == "tiny" else load_clip_vision(name, revision=revision, what=what)
    return model.to(device)


def _parser() -> ArgumentParser:
    from modeling_evalign.features.extraction import EVENT_POOLINGS, TARGET_TOKENS

    ap = ArgumentParser(prog="extract_features.py", description=__doc__.split("\n\n")[0])
    add_builder_arguments(ap, multiple_durations=False)
    ap.add_argument("--out", required=True, help="output folder; one sub-folder per split")
    ap.add_argument("--splits", nargs="+", default=None, help="default: every split the rule gives")
    ap.add_argument("--source", default="dsec", choices=["dsec", "builder"],
                    help="dsec: read the recordings directly; builder: the HF Datasets builder cache")
    ap.add_argument(
        "--event-model", default="openai/clip-vit-large-patch14-336", help="repo id, path or 'tiny'"
    )
    ap.add_argument("--target-model", default=None, help="default: the event model")
    ap.add_argument("--revision", default=None)
    ap.add_argument("--event-pooling", default="pooled", choices=EVENT_POOLINGS)
    ap.add_argument("--event-layer", type=int, default=-1)
    ap.add_argument("--target-tokens", default="cls", choices=TARGET_TOKENS)
    ap.add_argument("--target-layer", type=int, default=-2, help="-2 = penultimate (Video-LLaVA)")
    ap.add_argument("--dtype", default="float32", choices=DTYPE_CHOICES,
                    help="compute dtype (bfloat16/float16 under autocast; float16 on CPU computes in fp32)")
    ap.add_argument("--save-dtype", default="same", choices=["same", *DTYPE_CHOICES],
                    help="dtype of the stored features (same: --dtype)")
    ap.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (x frames)")
    ap.add_argument("--shard-size", type=int, default=256, help="windows per resumable shard")
    ap.add_argument("--num-workers", type=int, default=0, help="DataLoader workers per process")
    ap.add_argument("--cpu", action="store_true", help="run on CPU even where CUDA is available")
    return ap


def _check(args) -> None:
    for flag in ("batch_size", "shard_size"):
        if getattr(args, flag) < 1:
            raise CLIError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.num_workers < 0:
        raise CLIError(f"--num-workers must be >= 0, got {args.num_workers}")
    from modeling_evalign.utils.checks import check_tower_names

    check_tower_names(**{"--event-model": args.event_model, "--target-model": args.target_model})


def _sources(args, process) -> dict:
    """Split name -> rows, from the recordings or from the builder cache."""
    if args.source == "dsec":
        from modeling_evalign.features.dsec_windows import DsecWindows

        kw = dict(num_frames=args.num_frames, val_fraction=args.val_fraction,
                  test_fraction=args.test_fraction, split_seed=args.split_seed,
                  keep_empty_windows=args.keep_empty_windows)
        splits = args.splits or DsecWindows(args.data_dir, args.duration, **kw).split_names
        return {s: DsecWindows(args.data_dir, args.duration, split=s, **kw) for s in splits}
    from modeling_evalign.data.dsec_builder import DsecAlignmentBuilder

    builder = DsecAlignmentBuilder(
        config_name=args.duration, data_dir=args.data_dir, cache_dir=args.cache_dir, **builder_kwargs(args)
    )
    for turn in (True, False):  # the main process prepares the cache, then the others read it
        if process.is_main == turn:
            builder.download_and_prepare(num_proc=args.num_proc)
        process.barrier()
    splits = args.splits or [str(s) for s in builder.info.splits]
    return {s: builder.as_dataset(split=s) for s in splits}


def main(argv=None) -> dict:
    args = _parser().parse_args(argv)
    _check(args)
    from modeling_evalign.features.extraction import ExtractionOptions, extract_features
    from modeling_evalign.features.extraction_distributed import accelerate_process

    process = accelerate_process(cpu=True if args.cpu else None)
    options = ExtractionOptions(
        event_pooling=args.event_pooling,
        event_layer=args.event_layer,
        target_tokens=args.target_tokens,
        target_layer=args.target_layer,
    )
    # the towers first: a wrong --event-model fails before the windows are read or a cache is built
    event_model = _encoder(args.event_model, args.revision, process.device, "--event-model")
    target_model = (
        event_model if args.target_model is None else _encoder(args.target_model, args.revision, process.device, "--target-model")
    )
    sources = _sources(args, process)
    results = {}
    for split, rows in sources.items():
        r = results[split] = extract_features(
            rows,
            f"{args.out}/{split}",
            event_model,
            target_model,
            options=options,
            batch_size=args.batch_size,
            shard_size=args.shard_size,
            split=split,
            dtype=args.dtype,
            save_dtype=None if args.save_dtype == "same" else args.save_dtype,
            num_workers=args.num_workers,
            process=process,
        )
        if process.is_main:
            print(
                f"{split}: {r.num_samples} windows, event {r.event_shape}, target {r.target_shape} -> "
                f"{r.output_dir}; encoded {r.windows_computed} windows ({r.shards_skipped} shards already "
                f"done) in {r.seconds:.1f} s: {r.windows_per_second:.2f} windows/s "
                f"({r.num_processes} process{'es' if r.num_processes > 1 else ''}, {args.dtype})",
                flush=True,
            )
    if process.is_main:
        total = sum(r.windows_computed for r in results.values())
        seconds = sum(r.seconds for r in results.values())
        print(f"total: {total} windows in {seconds:.1f} s: {total / seconds if seconds else 0.0:.2f} windows/s")
    return results


if __name__ == "__main__":
    raise SystemExit(run_cli(lambda argv: main(argv) and 0, prog="extract_features.py"))
