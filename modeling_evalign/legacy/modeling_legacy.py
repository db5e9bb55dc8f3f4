"""Models converted from the brief's legacy ``.pt`` checkpoints: its layers, names and forward, re-implemented.

Parameter names equal the legacy ``model_state_dict`` keys (``adapter.mlp.0.weight``, ``residual_proj.weight``,
``scale``, ``event_projector.mlp.4.bias`` ...), so a converted state dict loads strictly and every weight is
accounted for. Inference only: the legacy whitening updates its statistics in training mode; here it always
uses the stored running mean and covariance, as the legacy module does in eval mode.
"""

from __future__ import annotations

import torch
from torch import nn

from ..losses import mse_loss
from ..modeling_outputs import AlignmentOutput
from ..modeling_utils import EvalignPreTrainedModel
from .configuration_legacy import LegacyAlignmentConfig

RESIDUAL_WEIGHT = 0.1  # the legacy lightweight module adds 0.1 * residual_proj(x)


def _mlp(d_in: int, d_out: int, hidden: int, num_layers: int, dropout: float, layer_norm: bool) -> nn.Sequential:
    """The legacy MLP layout: one Linear for ``num_layers == 1``, else ``[Linear, (LayerNorm), GELU, Dropout]``
    blocks into ``hidden`` widths and a last Linear (the Sequential indices are the state-dict names)."""
    if num_layers == 1:
        return nn.Sequential(nn.Linear(d_in, d_out))
    layers: list[nn.Module] = []
    for i in range(num_layers - 1):
        layers.append(nn.Linear(d_in if i == 0 else hidden, hidden))
        if layer_norm:
            layers.append(nn.LayerNorm(hidden))
        layers += [nn.GELU(), nn.Dropout(dropout)]
    layers.append(nn.Linear(hidden, d_out))
    return nn.Sequential(*layers)


class _Linear(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)

    def forward(self, x):
        return self.linear(x)


class _MLP(nn.Module):
    def __init__(self, *args):
        super().__init__()
        self.mlp = _mlp(*args)

    def forward(self, x):
        return self.mlp(x)


class _Bottleneck(nn.Module):
    def __init__(self, d_in: int, d_out: int, bottleneck: int, dropout: float):
        super().__init__()
        self.down_proj = nn.Linear(d_in, bottleneck)
        self.up_proj = nn.Linear(bottleneck, d_out)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.up_proj(self.dropout(self.act(self.down_proj(x))))


class _Whitening(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_cov", torch.eye(dim))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x):
        eye = torch.eye(self.running_cov.shape[0], device=x.device, dtype=self.running_cov.dtype)
        u, s, vh = torch.linalg.svd(self.running_cov + self.eps * eye)
        return (x - self.running_mean) @ (u @ torch.diag((s + self.eps).rsqrt()) @ vh)


class LegacyAlignmentModel(EvalignPreTrainedModel):
    """Event features ``[B, event_dim]`` (or ``[B, N, event_dim]``) -> ``[..., target_dim]``, as the legacy module."""

    config_class = LegacyAlignmentConfig

    def __init__(self, config: LegacyAlignmentConfig):
        super().__init__(config)
        c = config
        self._lightweight = c.source_class == "LightweightAlignmentConfig"
        if not self._lightweight:  # contrastive: the event projector is always the legacy MLP
            self.event_projector = _MLP(c.event_dim, c.target_dim, c.hidden_dim, c.num_layers, c.dropout,
                                        c.use_layer_norm)
        else:
            if c.adapter_type == "linear":
                self.adapter = _Linear(c.event_dim, c.target_dim)
            elif c.adapter_type == "mlp":
                self.adapter = _MLP(c.event_dim, c.target_dim, c.hidden_dim, c.num_layers, c.dropout, c.use_layer_norm)
            else:
                self.adapter = _Bottleneck(c.event_dim, c.target_dim, c.hidden_dim // 4, c.dropout)
            self.whitening = _Whitening(c.event_dim, c.whitening_eps) if c.use_whitening else None
            if c.use_residual:
                self.residual_proj = (nn.Linear(c.event_dim, c.target_dim, bias=False) if c.event_dim != c.target_dim
                                      else nn.Identity())
            else:
                self.residual_proj = None
            self.scale = nn.Parameter(torch.ones(1))
        self.post_init()

    def _init_weights(self, module):  # every weight comes from the legacy checkpoint
        pass

    def align(self, event_features: torch.Tensor) -> torch.Tensor:
        self._check_features(event_features, "event_features", self.config.event_dim)
        x = event_features
        if not self._lightweight:
            return self.event_projector(x)
        if self.whitening is not None:
            x = self.whitening(x)
        out = self.adapter(x)
        if self.residual_proj is not None:
            out = out + RESIDUAL_WEIGHT * self.residual_proj(x)
        return out * self.scale

    def forward(self, event_features: torch.Tensor, target_features: torch.Tensor | None = None) -> AlignmentOutput:
        """``aligned_features``; with ``target_features`` (same shape) also their MSE as ``loss``."""
        aligned = self.align(event_features)
        if target_features is None:
            return AlignmentOutput(aligned_features=aligned)
        if not isinstance(target_features, torch.Tensor) or target_features.shape != aligned.shape:
            raise ValueError(f"target_features must have the aligned features' shape {tuple(aligned.shape)}")
        mse = mse_loss(aligned, target_features)
        return AlignmentOutput(loss=mse, aligned_features=aligned, mse_loss=mse)


LegacyAlignmentModel.register_for_auto_class("AutoModel")

# the product brief's name (transformers style is *Model)
LegacyAlignmentModule = LegacyAlignmentModel
