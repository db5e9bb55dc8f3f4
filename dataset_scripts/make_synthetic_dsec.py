#!/usr/bin/env python
"""Write synthetic DSEC-format sequences (photographs under a moving camera, simulated events).

Example:
    python dataset_scripts/make_synthetic_dsec.py --out data/synthetic_dsec --sequences 8 --seconds 10 --seed 0
"""

from __future__ import annotations

import argparse
import sys

from modeling_evalign.data.cli import positive
from modeling_evalign.utils.cli import ArgumentParser, run_cli

PROG = "make_synthetic_dsec.py"


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x480, got {text!r}") from None
    from modeling_evalign.utils.checks import check_size

    try:
        return check_size("size", (w, h))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory (one sub-directory per sequence)")
    parser.add_argument("--sequences", type=positive(int), default=2, help="number of sequences (default 2)")
    parser.add_argument("--seconds", type=positive(float), default=2.0, help="length of each sequence in s (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed -> identical output")
    parser.add_argument("--image-size", type=_size, default=(1440, 1080), help="RGB images WxH (1440x1080)")
    parser.add_argument("--sensor-size", type=_size, default=(640, 480), help="event sensor WxH (640x480)")
    parser.add_argument(
        "--photos", nargs="+", default=None, help="scikit-image photographs to use (default all)"
    )
    parser.add_argument("--contrast-threshold", type=positive(float), default=0.2, help="simulator C (log units)")
    parser.add_argument("--workers", type=positive(int), default=1, help="processes writing sequences (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)

    from modeling_evalign.events.scenes import PHOTOS
    from modeling_evalign.events.synthetic_dsec import write_synthetic_dsec

    unknown = [p for p in args.photos or [] if p not in PHOTOS]
    if unknown:
        parser.error(f"argument --photos: unknown photograph {unknown[0]!r} (choose from {', '.join(sorted(PHOTOS))})")

    paths = write_synthetic_dsec(
        args.out,
        sequences=args.sequences,
        seconds=args.seconds,
        seed=args.seed,
        image_size=args.image_size,
        sensor_size=args.sensor_size,
        photos=args.photos,
        progress=not args.no_progress,
        workers=args.workers,
        contrast_threshold=args.contrast_threshold,
    )
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog=PROG))
