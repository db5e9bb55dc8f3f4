"""Train an evalign strategy with Accelerate (one process, or many through ``accelerate launch``).

    python train_accelerate.py --strategy lightweight --train_dir features/train --val_dir features/val
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \\
        --dynamo_backend no train_accelerate.py --strategy contrastive --train_dir ... --batch_size 64
    python train_accelerate.py --strategy contrastive_image --dsec_data_dir DSEC --durations 200ms 1s
    python train_accelerate.py --strategy triple_modal --train_dir features/train --label_key scene --text_model CLIP
    python train_accelerate.py --strategy triple_modal_image --dsec_data_dir DSEC --durations 1s --label_key scene

``--batch_size`` is the global batch (all processes together). ``--resume_from_checkpoint latest`` continues
a killed run exactly. All flags: ``python train_accelerate.py --help`` (modeling_evalign.training.config).
"""

from __future__ import annotations

import sys
from pathlib import Path

SIGTERM_EXIT = 143  # 128 + SIGTERM, what a shell reports for a process the signal ended


def _train(argv: list[str] | None, prog: str) -> int:
    from modeling_evalign.training.config import parse_args
    from modeling_evalign.training.loop import run

    results = run(parse_args(argv, prog=prog))
    from accelerate import PartialState

    if not PartialState().is_main_process:  # one report per launch
        return SIGTERM_EXIT if any(r.signalled for r in results) else 0
    for result in results:
        status = "interrupted (resumable)" if result.interrupted else "finished"
        print(f"[evalign] {result.output_dir}: {status} at step {result.global_step}", flush=True)
    if any(r.signalled for r in results):  # a scheduler must not take a SIGTERM-stopped run for a finished one
        print(f"{prog}: stopped by SIGTERM after saving a checkpoint; continue with --resume_from_checkpoint latest",
              file=sys.stderr, flush=True)
        return SIGTERM_EXIT
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), train, print one status line per run; returns the exit status.

    User errors (bad flags, missing paths, invalid TrainConfig values, a batch larger than the data) print ONE
    line ``prog: error: ...`` on stderr and return 2 (modeling_evalign.utils.cli); ``EVALIGN_TRACEBACK=1``
    shows the traceback instead.
    """
    from modeling_evalign.utils.cli import run_cli

    prog = Path(sys.argv[0]).name or "train_accelerate.py"
    return run_cli(lambda a: _train(a, prog), argv, prog=prog)


if __name__ == "__main__":
    sys.exit(main())
