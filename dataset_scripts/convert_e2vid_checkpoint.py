"""Convert an original E2VID/FireNet checkpoint to a Hugging Face directory.

    python dataset_scripts/convert_e2vid_checkpoint.py in.pth.tar out_dir

Thin wrapper around ``python -m modeling_evalign.reconstruction.convert``.
"""

from __future__ import annotations

from modeling_evalign.reconstruction.convert import main

if __name__ == "__main__":
    raise SystemExit(main())
