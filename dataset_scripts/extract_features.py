#!/usr/bin/env python
"""Extract frozen-CLIP features of the DSEC alignment windows into feature directories (one per split).

    python dataset_scripts/extract_features.py --data-dir /data/dsec/train --duration 1s --out ./features/1s \
        --event-model openai/clip-vit-large-patch14-336 --target-model openai/clip-vit-large-patch14 \
        --event-pooling tokens --target-tokens patch --target-layer -2

``--event-model tiny`` (and ``--target-model tiny``) use a randomly initialised tiny CLIP tower (tests, demo).
Writes ``<out>/<split>/{event,target}_features.safetensors`` + ``metadata.json`` (the format read by
``AlignmentDataset.from_directory``). Resumable: rerun the same command after a kill.
"""

from __future__ import annotations

import argparse

from modeling_evalign.data.cli import add_builder_arguments, builder_kwargs


def _encoder(name: str, revision: str | None):
    from modeling_evalign.features.extraction import load_clip_vision, tiny_clip_vision

    return tiny_clip_vision() if name == "tiny" else load_clip_vision(name, revision=revision)


def main(argv=None) -> dict:
    from modeling_evalign.data.dsec_builder import DsecAlignmentBuilder
    from modeling_evalign.features.extraction import (
        EVENT_POOLINGS,
        TARGET_TOKENS,
        ExtractionOptions,
        extract_features,
    )

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_builder_arguments(ap, multiple_durations=False)
    ap.add_argument("--out", required=True, help="output folder; one sub-folder per split")
    ap.add_argument("--splits", nargs="+", default=None, help="default: every split the builder made")
    ap.add_argument(
        "--event-model", default="openai/clip-vit-large-patch14-336", help="repo id, path or 'tiny'"
    )
    ap.add_argument("--target-model", default=None, help="default: the event model")
    ap.add_argument("--revision", default=None)
    ap.add_argument("--event-pooling", default="pooled", choices=EVENT_POOLINGS)
    ap.add_argument("--event-layer", type=int, default=-1)
    ap.add_argument("--target-tokens", default="cls", choices=TARGET_TOKENS)
    ap.add_argument("--target-layer", type=int, default=-2, help="-2 = penultimate (Video-LLaVA)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--shard-size", type=int, default=256, help="windows per resumable shard")
    args = ap.parse_args(argv)

    builder = DsecAlignmentBuilder(
        config_name=args.duration, data_dir=args.data_dir, cache_dir=args.cache_dir, **builder_kwargs(args)
    )
    builder.download_and_prepare(num_proc=args.num_proc)
    event_model = _encoder(args.event_model, args.revision)
    target_model = event_model if args.target_model is None else _encoder(args.target_model, args.revision)
    options = ExtractionOptions(
        event_pooling=args.event_pooling,
        event_layer=args.event_layer,
        target_tokens=args.target_tokens,
        target_layer=args.target_layer,
    )
    results = {}
    for split in args.splits or [str(s) for s in builder.info.splits]:
        ds = builder.as_dataset(split=split)
        results[split] = extract_features(
            ds,
            f"{args.out}/{split}",
            event_model,
            target_model,
            options=options,
            batch_size=args.batch_size,
            shard_size=args.shard_size,
            split=split,
        )
        r = results[split]
        print(
            f"{split}: {r.num_samples} windows, event {r.event_shape}, target {r.target_shape} -> {r.output_dir}"
        )
    return results


if __name__ == "__main__":
    main()
