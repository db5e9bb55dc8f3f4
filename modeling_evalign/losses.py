"""Alignment losses: symmetric InfoNCE across processes (open_clip's ClipLoss pattern) and regression terms.

Only torch is imported here: this file is bundled next to saved checkpoints for ``trust_remote_code``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _distributed_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when not distributed."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(features: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate ``features`` ``[B, D]`` from every process, keeping gradients; return it and this rank's row offset.

    The local tensor sits in its own slot of the result. ``torch.distributed.nn``'s all_gather is
    differentiable: its backward sums, into each rank's features, the gradients every rank's loss sends
    to them. That makes per-rank local losses (local rows against all columns) exact: averaged over
    ranks (as DDP does with parameter gradients) they give the single-process loss and gradients of the
    concatenated batch. All processes must pass the same batch size (DDP's ``even_batches`` default).
    Without a process group (or with one process) this is the identity with offset 0.
    """
    rank, world = _distributed_world()
    if world == 1:
        return features, 0
    from torch.distributed.nn.functional import all_gather

    sizes = [torch.zeros(1, dtype=torch.long, device=features.device) for _ in range(world)]
    torch.distributed.all_gather(sizes, torch.tensor([features.shape[0]], device=features.device))
    sizes = [int(s.item()) for s in sizes]
    if len(set(sizes)) != 1:
        raise ValueError(f"contrastive loss needs the same batch size on every process: got {sizes} per rank")
    parts = list(all_gather(features.contiguous()))
    parts[rank] = features  # identical values; keeps the local autograd path short and explicit
    return torch.cat(parts, dim=0), rank * features.shape[0]


def symmetric_info_nce(
    event_embeddings: torch.Tensor,
    target_embeddings: torch.Tensor,
    logit_scale: torch.Tensor | float,
    *,
    gather: bool = True,
) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP loss) of L2-normalised ``[B, D]`` embeddings; row i of each is a positive pair.

    ``logit_scale`` is the multiplier (1 / temperature), already exponentiated and clamped.
    Loss = (CE(events -> all targets) + CE(targets -> all events)) / 2, averaged over local rows; with
    ``gather`` and a process group the columns are the features of every process (labels offset by rank).
    Returns a scalar tensor.
    """
    if event_embeddings.dim() != 2 or event_embeddings.shape != target_embeddings.shape:
        raise ValueError(
            f"event_embeddings {tuple(event_embeddings.shape)} and target_embeddings "
            f"{tuple(target_embeddings.shape)} must both be [B, D] with equal shapes"
        )
    ev = F.normalize(event_embeddings, dim=-1)
    tg = F.normalize(target_embeddings, dim=-1)
    if gather:
        all_ev, offset = gather_with_grad(ev)
        all_tg, _ = gather_with_grad(tg)
    else:
        all_ev, all_tg, offset = ev, tg, 0
    labels = torch.arange(ev.shape[0], device=ev.device) + offset
    logits_per_event = logit_scale * ev @ all_tg.T
    logits_per_target = logit_scale * tg @ all_ev.T
    return (F.cross_entropy(logits_per_event, labels) + F.cross_entropy(logits_per_target, labels)) / 2


class ClipLoss(nn.Module):
    """Symmetric InfoNCE with a learnable temperature held elsewhere (see :func:`symmetric_info_nce`).

    ``forward(event_embeddings [B, D], target_embeddings [B, D], logit_scale_log ())`` exponentiates the
    log scale after clamping it to ``ln(max_logit_scale)`` (CLIP's cap of 100) and returns the scalar loss.
    """

    def __init__(self, max_logit_scale: float = 100.0, gather: bool = True):
        super().__init__()
        if max_logit_scale <= 0:
            raise ValueError(f"max_logit_scale={max_logit_scale} is invalid: expected > 0")
        self.max_log_scale = math.log(max_logit_scale)
        self.gather = gather

    def scale(self, logit_scale_log: torch.Tensor) -> torch.Tensor:
        """``exp(min(logit_scale_log, ln max_logit_scale))`` (gradient stops above the cap)."""
        return logit_scale_log.clamp(max=self.max_log_scale).exp()

    def forward(self, event_embeddings, target_embeddings, logit_scale_log, gather: bool | None = None):
        """``gather`` overrides the constructor's choice for this call (e.g. off for a one-rank evaluation:
        the gather is a collective that would wait for the other processes)."""
        gather = self.gather if gather is None else gather
        return symmetric_info_nce(event_embeddings, target_embeddings, self.scale(logit_scale_log), gather=gather)


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every element (scalar)."""
    return F.mse_loss(pred, target)


def cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of ``1 - cos(pred, target)`` over the last dimension (scalar)."""
    return (1.0 - F.cosine_similarity(pred, target, dim=-1)).mean()
