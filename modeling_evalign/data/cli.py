"""Command-line options shared by the dataset scripts (build, export, extract)."""

from __future__ import annotations

import argparse

from .windows import DURATIONS_US

REPRESENTATION_CHOICES = ["eventgpt_frames", "voxel_grid", "event_histogram"]


def add_builder_arguments(ap: argparse.ArgumentParser, multiple_durations: bool = True) -> None:
    """Options of ``DsecAlignmentBuilder`` (data dir, durations, representations, split rule, cache)."""
    ap.add_argument("--data-dir", required=True, help="folder with one DSEC sequence per sub-folder")
    if multiple_durations:
        ap.add_argument("--durations", nargs="+", default=list(DURATIONS_US), choices=list(DURATIONS_US))
    else:
        ap.add_argument("--duration", default="1s", choices=list(DURATIONS_US))
    ap.add_argument("--cache-dir", default=None, help="HF Datasets cache (default: HF_DATASETS_CACHE)")
    ap.add_argument("--num-proc", type=int, default=None, help="parallel jobs (sequences are the shards)")
    ap.add_argument(
        "--representations", nargs="+", default=["eventgpt_frames"], choices=REPRESENTATION_CHOICES
    )
    ap.add_argument("--num-frames", type=int, default=5, help="EventGPT frames per window")
    ap.add_argument("--num-bins", type=int, default=5, help="voxel grid bins")
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--test-fraction", type=float, default=0.1)
    ap.add_argument("--split-seed", type=int, default=0)


def builder_kwargs(args: argparse.Namespace) -> dict:
    """BuilderConfig overrides from parsed :func:`add_builder_arguments` options."""
    return dict(
        representations=tuple(args.representations),
        num_frames=args.num_frames,
        num_bins=args.num_bins,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        split_seed=args.split_seed,
    )
