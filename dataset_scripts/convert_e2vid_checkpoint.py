#!/usr/bin/env python
"""Convert an original E2VID/FireNet checkpoint to a Hugging Face directory.

    python dataset_scripts/convert_e2vid_checkpoint.py in.pth.tar out_dir

Same as ``python -m modeling_evalign.reconstruction.convert``; errors (missing file, a checkpoint that needs
code to unpickle, an unknown architecture) are one stderr line with exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

from modeling_evalign.utils.cli import ArgumentParser, run_cli

PROG = "convert_e2vid_checkpoint.py"


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="original .pth / .pth.tar file (loaded with weights_only=True)")
    parser.add_argument("out_dir", help="output directory (config.json, model.safetensors, module files)")
    args = parser.parse_args(argv)
    if not Path(args.checkpoint).is_file():
        parser.error(f"checkpoint {args.checkpoint!r} does not exist")
    from modeling_evalign.reconstruction.checkpoint import convert_original_checkpoint

    try:
        out = convert_original_checkpoint(args.checkpoint, args.out_dir)
    except KeyError as err:  # a key the converter needs is missing: a user error, not a bug
        raise ValueError(f"{args.checkpoint}: {err.args[0] if err.args else err}") from err
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog=PROG))
