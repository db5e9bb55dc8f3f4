"""Command line: convert an original E2VID/FireNet checkpoint to a Hugging Face model directory.

    python -m modeling_evalign.reconstruction.convert in.pth.tar out_dir
"""

from __future__ import annotations

import argparse
import sys

from .checkpoint import UnsafeCheckpointError, convert_original_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("checkpoint", help="original .pth / .pth.tar file (loaded with weights_only=True)")
    parser.add_argument("out_dir", help="output directory (config.json, model.safetensors, module files)")
    args = parser.parse_args(argv)
    try:
        out = convert_original_checkpoint(args.checkpoint, args.out_dir)
    except (UnsafeCheckpointError, ValueError, KeyError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
