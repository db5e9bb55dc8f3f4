"""Feature-level contrastive alignment: a projection head trained with symmetric InfoNCE (CEIA-style)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from ..losses import mse_loss, symmetric_info_nce
from ..modeling_outputs import ContrastiveAlignmentOutput
from ..modeling_utils import EvalignPreTrainedModel
from .configuration_contrastive import ContrastiveAlignmentConfig


class ProjectionHead(nn.Module):
    """``[..., in_dim] -> [..., out_dim]``: one Linear, or Linear-GELU-Linear with ``hidden_dim``."""

    def __init__(self, in_dim: int, out_dim: int, kind: str, hidden_dim: int):
        super().__init__()
        if kind == "linear":
            self.layers = nn.Sequential(nn.Linear(in_dim, out_dim))
        else:
            self.layers = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ContrastiveAlignmentModel(EvalignPreTrainedModel):
    """Event features ``[B, event_dim]`` (or tokens ``[B, N, event_dim]``) -> target space ``target_dim``.

    Training signal: symmetric InfoNCE between the (pooled) aligned events and the (pooled, optionally
    projected) targets with a learnable logit scale, gathered across processes when torch.distributed
    runs with several processes (see :func:`modeling_evalign.losses.symmetric_info_nce`), plus an
    optional MSE term that also fixes the scale of the aligned features.
    """

    config_class = ContrastiveAlignmentConfig

    def __init__(self, config: ContrastiveAlignmentConfig):
        super().__init__(config)
        self.event_head = ProjectionHead(config.event_dim, config.target_dim, config.projection_type, config.hidden_dim)
        self.target_head = (
            ProjectionHead(config.target_dim, config.target_dim, config.projection_type, config.hidden_dim)
            if config.use_target_head else None
        )
        log_scale = torch.tensor(math.log(1.0 / config.temperature))
        if config.learnable_temperature:
            self.logit_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("logit_scale", log_scale)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            init.zeros_(module.bias)
        elif module is self:
            init.constant_(self.logit_scale, math.log(1.0 / self.config.temperature))

    def clamped_logit_scale(self) -> torch.Tensor:
        """``exp(min(logit_scale, ln max_logit_scale))``, shape ``()`` (no gradient above the cap)."""
        return self.logit_scale.clamp(max=math.log(self.config.max_logit_scale)).exp()

    def align(self, event_features: torch.Tensor) -> torch.Tensor:
        """``[B, event_dim]`` -> ``[B, target_dim]`` (token inputs ``[B, N, event_dim]`` map token by token)."""
        if (
            not isinstance(event_features, torch.Tensor)
            or event_features.dim() not in (2, 3)
            or event_features.shape[-1] != self.config.event_dim
        ):
            self._check_features(event_features, "event_features", self.config.event_dim)
        return self.event_head(event_features)

    def pool_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Token features ``[B, N, D]`` -> the rows the loss compares (``config.token_pooling``); ``[B, D]`` stays."""
        if x.dim() == 2:
            return x
        if self.config.token_pooling == "flatten":
            return x.flatten(1)
        return x[:, 0] if self.config.token_pooling == "cls" else x.mean(dim=1)

    def forward(
        self,
        event_features: torch.Tensor,
        target_features: torch.Tensor | None = None,
        gather_across_processes: bool | None = None,
    ) -> ContrastiveAlignmentOutput:
        """``aligned_features`` in the target space; with ``target_features`` (``[B, target_dim]`` or
        ``[B, M, target_dim]``, same batch) also ``loss = contrastive_weight * InfoNCE + mse_weight * MSE``.

        ``gather_across_processes`` (default: ``self.training``): use every process's batch as negatives
        when torch.distributed runs with several processes. It is a collective call, so it is off in eval
        mode by default: an evaluation that runs on one rank only must not wait for the others.
        """
        cfg = self.config
        aligned = self.align(event_features)
        scale = self.clamped_logit_scale()
        if target_features is None:
            return ContrastiveAlignmentOutput(aligned_features=aligned, logit_scale=scale)
        self._check_features(target_features, "target_features", cfg.target_dim)
        if target_features.shape[0] != aligned.shape[0]:
            raise ValueError(
                f"target_features has batch {target_features.shape[0]}: expected {aligned.shape[0]} "
                "(one target per event row)"
            )
        if cfg.token_pooling == "flatten" and aligned.dim() == 3 and target_features.shape[1:-1] != aligned.shape[1:-1]:
            raise ValueError(f"token_pooling='flatten' needs as many target tokens as event tokens: target_features "
                             f"{tuple(target_features.shape)}, aligned {tuple(aligned.shape)}")
        ev = self.pool_tokens(aligned)
        tg = self.pool_tokens(target_features)
        if self.target_head is not None:
            tg = self.target_head(tg)
        gather = self.training if gather_across_processes is None else gather_across_processes
        contrastive = symmetric_info_nce(ev, tg, scale, gather=gather)
        with torch.no_grad():
            logits = scale * F.normalize(ev, dim=-1) @ F.normalize(tg, dim=-1).T
        loss = cfg.contrastive_weight * contrastive
        mse = None
        if cfg.mse_weight > 0:
            if target_features.shape != aligned.shape:
                raise ValueError(
                    f"target_features has shape {tuple(target_features.shape)}: the MSE term needs "
                    f"{tuple(aligned.shape)} (the aligned features' shape)"
                )
            mse = mse_loss(aligned, target_features)
            loss = loss + cfg.mse_weight * mse
        return ContrastiveAlignmentOutput(
            loss=loss, aligned_features=aligned, mse_loss=mse, contrastive_loss=contrastive,
            logits_per_event=logits, logit_scale=scale, target_embeddings=tg,
        )


ContrastiveAlignmentModel.register_for_auto_class("AutoModel")

# the product brief's name (transformers style is *Model)
ContrastiveAlignmentModule = ContrastiveAlignmentModel
