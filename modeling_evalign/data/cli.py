"""Command-line options shared by the dataset scripts (build, export, extract): one-line errors on bad values.

Parse with :class:`modeling_evalign.utils.cli.ArgumentParser` and run ``main`` through ``run_cli``: a bad
value (``--num-proc 0``, ``--val-fraction 2``, an unknown duration) is one ``prog: error: ...`` line on
stderr with exit status 2; a missing ``--data-dir`` is reported by the builder (FileNotFoundError).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from .windows import DURATIONS_US

REPRESENTATION_CHOICES = ["eventgpt_frames", "voxel_grid", "event_histogram"]


def positive(kind: type = int) -> Callable[[str], int | float]:
    """argparse ``type=``: a number of ``kind`` that is > 0."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a value > 0, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its message
    return parse


def fraction(text: str) -> float:
    """argparse ``type=``: a float in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}")
    return value


def add_builder_arguments(ap: argparse.ArgumentParser, multiple_durations: bool = True) -> None:
    """Options of ``DsecAlignmentBuilder`` (data dir, durations, representations, split rule, cache)."""
    ap.add_argument("--data-dir", required=True, help="folder with one DSEC sequence per sub-folder")
    if multiple_durations:
        ap.add_argument("--durations", nargs="+", default=list(DURATIONS_US), choices=list(DURATIONS_US))
    else:
        ap.add_argument("--duration", default="1s", choices=list(DURATIONS_US))
    ap.add_argument("--cache-dir", default=None, help="HF Datasets cache (default: HF_DATASETS_CACHE)")
    ap.add_argument("--num-proc", type=positive(int), default=None, help="parallel jobs (sequences are the shards)")
    ap.add_argument(
        "--representations", nargs="+", default=["eventgpt_frames"], choices=REPRESENTATION_CHOICES
    )
    ap.add_argument("--num-frames", type=positive(int), default=5, help="EventGPT frames per window")
    ap.add_argument("--num-bins", type=positive(int), default=5, help="voxel grid bins")
    ap.add_argument("--val-fraction", type=fraction, default=0.1)
    ap.add_argument("--test-fraction", type=fraction, default=0.1)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--keep-empty-windows", action="store_true",
                    help="keep windows with no event (default: skipped, with a warning naming how many)")


def builder_kwargs(args: argparse.Namespace) -> dict:
    """BuilderConfig overrides from parsed :func:`add_builder_arguments` options."""
    return dict(
        representations=tuple(args.representations),
        num_frames=args.num_frames,
        num_bins=args.num_bins,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        split_seed=args.split_seed,
        **({"keep_empty_windows": True} if getattr(args, "keep_empty_windows", False) else {}),
    )
