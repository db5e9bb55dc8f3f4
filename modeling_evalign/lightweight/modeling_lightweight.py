"""Lightweight adapter: linear or bottleneck-MLP map from event features to target (CLIP) features."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from ..losses import cosine_loss, mse_loss
from ..modeling_outputs import AlignmentOutput
from ..modeling_utils import EvalignPreTrainedModel
from ..token_grid import resample_token_grid
from .configuration_lightweight import LightweightAlignmentConfig


@dataclass
class ClosedFormFit:
    """Result of :meth:`LightweightAlignmentModel.fit_closed_form` (float64, on CPU).

    weight: ``[target_dim, event_dim]``; bias: ``[target_dim]``; train_mse: MSE of the fit on its data.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    train_mse: float


class LightweightAlignmentModel(EvalignPreTrainedModel):
    """Event features ``[B, event_dim]`` or tokens ``[B, N, event_dim]`` -> target space ``target_dim``.

    Pipeline (each step only when configured): token-grid resampling (``source_grid`` ->
    ``target_grid``, CLS kept or dropped) -> whitening ``(x - mean) @ W`` -> adapter. Resampling comes
    first so the adapter runs on the smaller grid; for the linear adapter the order does not change the
    result (interpolation weights sum to one).
    """

    config_class = LightweightAlignmentConfig

    def __init__(self, config: LightweightAlignmentConfig):
        super().__init__(config)
        d_in, d_out = config.event_dim, config.target_dim
        if config.use_whitening:
            self.register_buffer("whitening_mean", torch.zeros(d_in))
            self.register_buffer("whitening_matrix", torch.eye(d_in))
        if config.adapter_type == "linear":
            self.proj = nn.Linear(d_in, d_out)
        else:
            self.down = nn.Linear(d_in, config.hidden_dim)
            self.act = nn.GELU()
            self.dropout = nn.Dropout(config.dropout)
            self.up = nn.Linear(config.hidden_dim, d_out)
            # a residual needs equal widths: a learned projection replaces the identity otherwise
            self.skip = nn.Linear(d_in, d_out) if d_in != d_out else None
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            if module is getattr(self, "up", None):
                init.zeros_(module.weight)  # the residual branch starts at zero: output = skip(x)
            else:
                init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            init.zeros_(module.bias)
        elif module is self and self.config.use_whitening:
            init.zeros_(self.whitening_mean)
            init.eye_(self.whitening_matrix)

    # -- feature pipeline ---------------------------------------------------------------------------
    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if x.dim() == 3 and cfg.source_grid is not None:
            return resample_token_grid(
                x, cfg.source_grid, cfg.target_grid,
                has_cls=cfg.has_cls_token, keep_cls=cfg.keep_cls_token, mode=cfg.resample_mode,
            )
        return x

    def _adapt(self, x: torch.Tensor) -> torch.Tensor:
        """Whitening + adapter on rows ``[M, event_dim]`` (2-D so linear layers use one fused addmm)."""
        if self.config.use_whitening:
            x = (x - self.whitening_mean) @ self.whitening_matrix
        if self.config.adapter_type == "linear":
            return F.linear(x, self.proj.weight, self.proj.bias)
        h = self.up(self.dropout(self.act(self.down(x))))
        return h + (x if self.skip is None else self.skip(x))

    def align(self, event_features: torch.Tensor) -> torch.Tensor:
        """Map event features to the target space: ``[B, event_dim]`` -> ``[B, target_dim]``,
        ``[B, N, event_dim]`` -> ``[B, N', target_dim]`` (N' after grid resampling)."""
        if (
            not isinstance(event_features, torch.Tensor)
            or event_features.dim() not in (2, 3)
            or event_features.shape[-1] != self.config.event_dim
        ):
            self._check_features(event_features, "event_features", self.config.event_dim)
        x = self._resample(event_features)
        if x.dim() == 2:
            return self._adapt(x)
        b, n, d = x.shape
        return self._adapt(x.reshape(b * n, d)).view(b, n, -1)

    def forward(
        self,
        event_features: torch.Tensor,
        target_features: torch.Tensor | None = None,
    ) -> AlignmentOutput:
        """``aligned_features`` in the target space; with ``target_features`` (same shape as the aligned
        features) also ``loss = mse_weight * MSE + cosine_weight * mean(1 - cos)``."""
        aligned = self.align(event_features)
        if target_features is None:
            return AlignmentOutput(aligned_features=aligned)
        if not isinstance(target_features, torch.Tensor) or target_features.shape != aligned.shape:
            shape = tuple(target_features.shape) if isinstance(target_features, torch.Tensor) else type(target_features)
            raise ValueError(
                f"target_features has shape {shape}: expected {tuple(aligned.shape)} "
                f"(the aligned features' shape, D={self.config.target_dim})"
            )
        cfg = self.config
        mse = mse_loss(aligned, target_features)
        loss = cfg.mse_weight * mse
        cos = None
        if cfg.cosine_weight > 0:
            cos = cosine_loss(aligned, target_features)
            loss = loss + cfg.cosine_weight * cos
        return AlignmentOutput(loss=loss, aligned_features=aligned, mse_loss=mse, cosine_loss=cos)

    # -- fitting from data --------------------------------------------------------------------------
    # Both fits accumulate float64 moments over chunks of samples, so memory stays O(D^2) even for
    # thousands of token-level samples (5K x 257 x 1024 rows would need ~10 GB as one float64 matrix).
    def _row_chunks(self, event_features: torch.Tensor, target_features: torch.Tensor | None, whiten: bool):
        """Yield float64 CPU row blocks ``(x [M, event_dim], y [M, target_dim] | None)`` as the adapter sees them."""
        cfg = self.config
        self._check_features(event_features, "event_features", cfg.event_dim)
        if target_features is not None:
            self._check_features(target_features, "target_features", cfg.target_dim)
            if target_features.shape[0] != event_features.shape[0]:
                raise ValueError(
                    f"target_features has {target_features.shape[0]} samples but event_features has "
                    f"{event_features.shape[0]}: expected one target per event sample"
                )
        tokens = event_features.shape[1] if event_features.dim() == 3 else 1
        step = max(1, self._FIT_CHUNK_ROWS // tokens)
        for start in range(0, event_features.shape[0], step):
            x_chunk = event_features[start:start + step]
            x = self._resample(x_chunk).reshape(-1, cfg.event_dim)
            if whiten:
                x = (x - self.whitening_mean) @ self.whitening_matrix
            y = None
            if target_features is not None:
                y = target_features[start:start + step].reshape(-1, cfg.target_dim)
                if y.shape[0] != x.shape[0]:
                    raise ValueError(
                        f"target_features gives {y.shape[0]} rows but event_features gives {x.shape[0]} "
                        f"(after token-grid resampling) for samples {start}..{start + len(x_chunk) - 1}: expected equal counts"
                    )
                y = y.double().cpu()
            yield x.double().cpu(), y

    _FIT_CHUNK_ROWS = 65536

    @torch.no_grad()
    def fit_whitening(self, event_features: torch.Tensor) -> None:
        """Fit the ZCA whitening buffers from ``[B, event_dim]`` or ``[B, N, event_dim]`` features (float64).

        ``W = V diag(1 / sqrt(lambda + whitening_eps)) V^T`` from the eigendecomposition of the sample
        covariance (divisor n - 1) of the rows the adapter sees (after grid resampling).
        Raises ValueError when whitening is off in the config or there are fewer than 2 rows.
        """
        if not self.config.use_whitening:
            raise ValueError("fit_whitening needs a config with use_whitening=True")
        d = self.config.event_dim
        n, total, gram = 0, torch.zeros(d, dtype=torch.float64), torch.zeros(d, d, dtype=torch.float64)
        for x, _ in self._row_chunks(event_features, None, whiten=False):
            n += x.shape[0]
            total += x.sum(0)
            gram += x.T @ x
        if n < 2:
            raise ValueError(f"fit_whitening needs at least 2 feature rows, got {n}")
        mean = total / n
        cov = (gram - n * torch.outer(mean, mean)) / (n - 1)
        evals, evecs = torch.linalg.eigh(cov)
        w = evecs @ torch.diag((evals.clamp(min=0) + self.config.whitening_eps).rsqrt()) @ evecs.T
        self.whitening_mean.copy_(mean.to(self.whitening_mean))
        self.whitening_matrix.copy_(w.to(self.whitening_matrix))

    @torch.no_grad()
    def fit_closed_form(
        self, event_features: torch.Tensor, target_features: torch.Tensor, ridge: float = 1e-3
    ) -> ClosedFormFit:
        """Ridge regression target ~ event (after resampling and whitening), solved in float64, written
        into the adapter as a warm start (or an instant baseline).

        Centred, so the bias is not penalised: ``W = (Xc^T Xc + ridge I)^-1 Xc^T Yc``,
        ``b = mean(Y) - mean(X) W``. Token inputs are treated as rows (the target token count must match
        the resampled event tokens). For the "mlp" adapter the fit goes into the skip projection and the
        residual branch is zeroed, so the model output equals the ridge prediction; with an identity skip
        (equal widths) there is no linear layer to hold it and a ValueError is raised.
        """
        cfg = self.config
        if not ridge >= 0:
            raise ValueError(f"ridge={ridge} is invalid: expected >= 0")
        if cfg.adapter_type == "mlp" and self.skip is None:
            raise ValueError(
                "fit_closed_form needs a linear layer to write into: adapter_type='linear', or 'mlp' with "
                f"event_dim != target_dim (here both are {cfg.event_dim})"
            )
        dx, dy = cfg.event_dim, cfg.target_dim
        f64 = torch.float64
        n, sx, sy = 0, torch.zeros(dx, dtype=f64), torch.zeros(dy, dtype=f64)
        xx, xy, yy = torch.zeros(dx, dx, dtype=f64), torch.zeros(dx, dy, dtype=f64), torch.zeros(dy, dtype=f64)
        for x, y in self._row_chunks(event_features, target_features, whiten=cfg.use_whitening):
            n += x.shape[0]
            sx += x.sum(0)
            sy += y.sum(0)
            xx += x.T @ x
            xy += x.T @ y
            yy += (y * y).sum(0)
        if n < 2:
            raise ValueError(f"fit_closed_form needs at least 2 rows, got {n}")
        mx, my = sx / n, sy / n
        gram = xx - n * torch.outer(mx, mx)
        cross = xy - n * torch.outer(mx, my)
        if ridge > 0:
            w = torch.linalg.solve(gram + ridge * torch.eye(dx, dtype=f64), cross)
        else:
            w = torch.linalg.pinv(gram, hermitian=True) @ cross
        b = my - mx @ w
        # training MSE from the moments: mean over rows and columns of (Xc W - Yc)^2
        yc_sq = yy - n * my * my
        sse = yc_sq.sum() - 2 * (w * cross).sum() + (w * (gram @ w)).sum()
        mse = float(sse.clamp(min=0) / (n * dy))
        layer = self.proj if cfg.adapter_type == "linear" else self.skip
        layer.weight.copy_(w.T.to(layer.weight))
        layer.bias.copy_(b.to(layer.bias))
        if cfg.adapter_type == "mlp":
            self.up.weight.zero_()
            self.up.bias.zero_()
        return ClosedFormFit(weight=w.T.contiguous(), bias=b, train_mse=mse)


LightweightAlignmentModel.register_for_auto_class("AutoModel")

# the product brief's name (transformers style is *Model)
LightweightAlignmentModule = LightweightAlignmentModel
