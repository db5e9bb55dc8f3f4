#!/usr/bin/env python
"""Prepare the DSEC alignment datasets (one HF Datasets config per window duration) into a cache dir.

    python dataset_scripts/build_dsec.py --data-dir /data/dsec/train --durations 200ms 1s --num-proc 4 \
        --cache-dir ~/.cache/evalign-dsec [--representations eventgpt_frames voxel_grid]

Prints the number of windows per duration and split. Windows, pairing and splits: see
``modeling_evalign.data.dsec_builder``.
"""

from __future__ import annotations

import sys

from modeling_evalign.data.cli import add_builder_arguments, builder_kwargs
from modeling_evalign.utils.cli import ArgumentParser, run_cli

PROG = "build_dsec.py"


def main(argv=None) -> dict[str, dict[str, int]]:
    from modeling_evalign.data.dsec_builder import DsecAlignmentBuilder

    ap = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    add_builder_arguments(ap)
    args = ap.parse_args(argv)
    counts = {}
    for d in args.durations:
        builder = DsecAlignmentBuilder(
            config_name=d, data_dir=args.data_dir, cache_dir=args.cache_dir, **builder_kwargs(args)
        )
        builder.download_and_prepare(num_proc=args.num_proc)
        counts[d] = {str(s): builder.info.splits[s].num_examples for s in builder.info.splits}
        print(f"{d:>6}: " + ", ".join(f"{s} {n}" for s, n in counts[d].items()) + f"  ({builder.cache_dir})")
    return counts


if __name__ == "__main__":
    sys.exit(run_cli(lambda argv: main(argv) and 0, prog=PROG))
