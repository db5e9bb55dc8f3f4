"""Config of the lightweight adapter strategy (event feature -> target feature)."""

from __future__ import annotations

from ..configuration_utils import EvalignConfig
from ..token_grid import RESAMPLE_MODES

ADAPTER_TYPES = ("linear", "mlp")


class LightweightAlignmentConfig(EvalignConfig):
    r"""
    Small adapter from event features (width ``event_dim``) to target features (width ``target_dim``).

    Args:
        event_dim: width of the event features (input), e.g. 1024 for CLIP-L.
        target_dim: width of the target features (output), e.g. 1024 for CLIP-L.
        adapter_type: "linear" (one affine map) or "mlp" (bottleneck Linear-GELU-Linear plus a residual
            skip; the skip is the identity when ``event_dim == target_dim`` and a learned linear
            projection otherwise, since a residual needs matching widths).
        hidden_dim: bottleneck width of the "mlp" adapter.
        dropout: dropout inside the "mlp" adapter (training only).
        use_whitening: apply ``(x - mean) @ W`` first; mean/W are buffers fitted with
            ``model.fit_whitening(features)`` (ZCA) and saved in the state dict (identity until fitted).
        whitening_eps: added to the covariance eigenvalues before the inverse square root.
        source_grid, target_grid: ``[height, width]`` patch grids for token-level inputs, e.g.
            ``[24, 24]`` (CLIP-L/14 at 336) -> ``[16, 16]`` (at 224). Both or neither. When unset, token
            inputs ``[B, N, D]`` are mapped token by token without resampling.
        has_cls_token: token 0 of token-level inputs is a CLS token (never interpolated).
        keep_cls_token: keep the CLS token in the output (Video-LLaVA: kept for video, dropped for images).
            Needs the grids; set them equal (e.g. ``[16, 16]`` twice) to drop CLS without resampling.
        resample_mode: interpolation of the patch grid: one of bilinear, bicubic, area, nearest.
        mse_weight, cosine_weight: loss = mse_weight * MSE + cosine_weight * mean(1 - cos).
        initializer_range: std of the normal init of linear weights (biases start at zero).
        target_model_id, target_revision: Hub id (or path) and revision of the frozen target tower the
            adapter was trained against (documentation for users; never loaded by this model).
    """

    model_type = "evalign_lightweight"

    event_dim: int = 1024
    target_dim: int = 1024
    adapter_type: str = "linear"
    hidden_dim: int = 256
    dropout: float = 0.0
    use_whitening: bool = False
    whitening_eps: float = 1e-5
    source_grid: list[int] | None = None
    target_grid: list[int] | None = None
    has_cls_token: bool = True
    keep_cls_token: bool = True
    resample_mode: str = "bilinear"
    mse_weight: float = 1.0
    cosine_weight: float = 0.0
    initializer_range: float = 0.02
    target_model_id: str | None = None
    target_revision: str | None = None

    def __post_init__(self, **kwargs):
        self._check_positive_ints("event_dim", "target_dim", "hidden_dim")
        self._check(self.adapter_type in ADAPTER_TYPES, "adapter_type", f"one of {ADAPTER_TYPES}")
        self._check(0.0 <= self.dropout < 1.0, "dropout", "a float in [0, 1)")
        self._check(self.whitening_eps > 0, "whitening_eps", "> 0")
        self._check(self.resample_mode in RESAMPLE_MODES, "resample_mode", f"one of {RESAMPLE_MODES}")
        self._check((self.source_grid is None) == (self.target_grid is None), "target_grid",
                    "source_grid and target_grid both set or both None")
        for name in ("source_grid", "target_grid"):
            grid = getattr(self, name)
            if grid is not None:
                grid = list(grid)
                setattr(self, name, grid)
                self._check(len(grid) == 2 and all(isinstance(v, int) and v > 0 for v in grid), name,
                            "[height, width] of positive ints")
        self._check(self.mse_weight >= 0, "mse_weight", ">= 0")
        self._check(self.cosine_weight >= 0, "cosine_weight", ">= 0")
        self._check(self.mse_weight + self.cosine_weight > 0, "mse_weight", "mse_weight + cosine_weight > 0")
        self._check(self.initializer_range > 0, "initializer_range", "> 0")
        super().__post_init__(**kwargs)

LightweightAlignmentConfig.register_for_auto_class()
