"""The product brief's DSEC alignment script: an alias of ``train_accelerate.py`` with the brief's flags.

    python run_egpt_dsec_alignment.py --durations 200ms 500ms 1s --strategy contrastive --num_epochs 20 \\
        --batch_size 32 --train_dir features/{duration}/train --val_dir features/{duration}/val

Feature strategies (lightweight, contrastive) read feature directories (``{duration}`` is substituted);
``contrastive_image`` reads the DSEC tree (``--dsec_data_dir``). Every other train_accelerate.py flag works.
"""

from __future__ import annotations

import sys

from train_accelerate import main

if __name__ == "__main__":
    sys.exit(main())
