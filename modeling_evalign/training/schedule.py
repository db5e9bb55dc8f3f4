"""The one optimizer and learning-rate schedule of every evalign training run.

AdamW on the trainable parameters; linear warm-up, then cosine decay to 0 (CEIA: Adam, lr 5e-4,
cosine, 20 epochs). The schedule is stepped once per optimizer step.
"""

from __future__ import annotations

import math

import torch


def cosine_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier after ``step`` optimizer steps: ``(step + 1) / warmup`` during the warm-up (the first
    step already moves), then ``(1 + cos(pi * progress)) / 2`` with progress 0 -> 1 over the remaining steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(params, learning_rate: float, weight_decay: float, **adamw: float) -> torch.optim.Optimizer:
    """AdamW over ``params`` (tensors, or parameter groups whose own ``weight_decay`` wins); ``adamw``: betas, eps."""
    params = list(params)
    if not params:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay, **adamw)


def make_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps={warmup_steps} must lie in [0, total steps={total_steps}]")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_factor(s, warmup_steps, total_steps))
