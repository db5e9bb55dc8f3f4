"""Output dataclasses shared by every alignment strategy.

The uniform interface every trainer relies on is
``model(event_features=..., target_features=None | tensor) -> AlignmentOutput``:
``aligned_features`` always live in the TARGET space (last dim ``config.target_dim``) so they feed
RGB-trained decoders directly, and ``loss`` is a scalar whenever targets were given.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class AlignmentOutput(ModelOutput):
    r"""
    loss (`torch.Tensor` of shape `()`, *optional*, returned when `target_features` is given):
        Total training loss (weighted sum of the strategy's terms).
    aligned_features (`torch.Tensor` of shape `(batch_size, target_dim)` or `(batch_size, num_tokens, target_dim)`):
        Event features mapped into the target (RGB/CLIP) feature space.
    mse_loss (`torch.Tensor` of shape `()`, *optional*):
        Mean squared error between `aligned_features` and the targets (unweighted), when computed.
    cosine_loss (`torch.Tensor` of shape `()`, *optional*):
        Mean of `1 - cos(aligned, target)` over rows/tokens (unweighted), when computed.
    """

    loss: torch.Tensor | None = None
    aligned_features: torch.Tensor | None = None
    mse_loss: torch.Tensor | None = None
    cosine_loss: torch.Tensor | None = None


@dataclass
class ContrastiveAlignmentOutput(AlignmentOutput):
    r"""
    contrastive_loss (`torch.Tensor` of shape `()`, *optional*):
        Symmetric InfoNCE loss (unweighted), when targets are given.
    logits_per_event (`torch.Tensor` of shape `(batch_size, batch_size)`, *optional*):
        Scaled cosine similarities of the local events against the local targets, when targets are given.
        (Across processes the loss uses the gathered targets; these logits stay local.)
    logit_scale (`torch.Tensor` of shape `()`):
        The clamped, exponentiated logit scale (1 / temperature) used in the loss.
    target_embeddings (`torch.Tensor` of shape `(batch_size, target_dim)`, *optional*):
        Targets after the optional target head (equal to the pooled targets when the head is off).
    """

    contrastive_loss: torch.Tensor | None = None
    logits_per_event: torch.Tensor | None = None
    logit_scale: torch.Tensor | None = None
    target_embeddings: torch.Tensor | None = None
