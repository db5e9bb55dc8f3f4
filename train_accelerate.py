"""Train an evalign strategy with Accelerate (one process, or many through ``accelerate launch``).

    python train_accelerate.py --strategy lightweight --train_dir features/train --val_dir features/val
    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \\
        --dynamo_backend no train_accelerate.py --cpu --strategy contrastive --train_dir ... --batch_size 64
    python train_accelerate.py --strategy contrastive_image --dsec_data_dir DSEC --durations 200ms 1s
    python train_accelerate.py --strategy triple_modal --train_dir features/train --label_key scene --text_model CLIP
    python train_accelerate.py --strategy triple_modal_image --dsec_data_dir DSEC --durations 1s --label_key scene

``--batch_size`` is the global batch (all processes together). ``--resume_from_checkpoint latest`` continues
a killed run exactly. All flags: ``python train_accelerate.py --help`` (modeling_evalign.training.config).
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    from modeling_evalign.training.config import parse_args
    from modeling_evalign.training.loop import run

    results = run(parse_args(argv))
    if int(os.environ.get("RANK", "0")) != 0:  # one report per launch, from the main process
        return 0
    for result in results:
        status = "interrupted (resumable)" if result.interrupted else "finished"
        print(f"[evalign] {result.output_dir}: {status} at step {result.global_step}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
