#!/usr/bin/env python
"""Export the DSEC alignment datasets as Parquet shards per duration plus a README.md dataset card.

    python dataset_scripts/export_dsec.py --data-dir /data/dsec/train --out ./dsec-alignment \
        --durations 200ms 1s --repo-id org/dsec-alignment

Then ``datasets.load_dataset("./dsec-alignment", name="1s")``, or upload the folder to the Hub.
The folder is written atomically (temporary folder, then rename).
"""

from __future__ import annotations

import sys

from modeling_evalign.data.cli import add_builder_arguments, builder_kwargs, positive
from modeling_evalign.utils.cli import ArgumentParser, run_cli

PROG = "export_dsec.py"


def main(argv=None):
    from modeling_evalign.data.export import DEFAULT_REPO_ID, export_dsec

    ap = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    add_builder_arguments(ap)
    ap.add_argument("--out", required=True, help="exported folder (replaced atomically)")
    ap.add_argument("--repo-id", default=DEFAULT_REPO_ID, help="repo id shown in the card's usage snippet")
    ap.add_argument("--max-rows-per-shard", type=positive(int), default=1000)
    ap.add_argument("--max-shard-mb", type=positive(float), default=500.0, help="approximate Parquet shard size")
    args = ap.parse_args(argv)
    result = export_dsec(
        args.data_dir,
        args.out,
        args.durations,
        repo_id=args.repo_id,
        cache_dir=args.cache_dir,
        num_proc=args.num_proc,
        max_rows_per_shard=args.max_rows_per_shard,
        max_shard_bytes=int(args.max_shard_mb * 1e6),
        **builder_kwargs(args),
    )
    for d, counts in result.counts.items():
        print(f"{d:>6}: " + ", ".join(f"{s} {n}" for s, n in counts.items()))
    print(f"wrote {len(result.files)} Parquet files and README.md to {result.output_dir}")
    return result


if __name__ == "__main__":
    sys.exit(run_cli(lambda argv: main(argv) and 0, prog=PROG))
