"""EventGPT's spatio-temporal pooling of per-frame CLIP tokens."""

from __future__ import annotations

import torch


def eventgpt_pool(frame_tokens: torch.Tensor) -> torch.Tensor:
    """Per-frame tokens ``[..., F, T, D]`` -> ``[..., F + T, D]`` as EventGPT pools them.

    The first ``F`` rows are temporal tokens (mean over the ``T`` tokens of each frame, CLS included); the
    next ``T`` rows are spatial tokens (mean over the ``F`` frames at each token position). For CLIP-L/14-336
    and 5 frames: [5, 577, 1024] -> [582, 1024].
    """
    if frame_tokens.ndim < 3:
        raise ValueError(f"frame_tokens: expected [..., F, T, D], got shape {tuple(frame_tokens.shape)}")
    temporal = frame_tokens.mean(dim=-2)  # [..., F, D]
    spatial = frame_tokens.mean(dim=-3)  # [..., T, D]
    return torch.cat([temporal, spatial], dim=-2)
