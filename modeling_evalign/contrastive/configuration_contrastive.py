"""Config of the feature-level contrastive strategy (CEIA-style InfoNCE on pre-extracted features)."""

from __future__ import annotations

from ..configuration_utils import EvalignConfig

PROJECTION_TYPES = ("linear", "mlp")
TOKEN_POOLING = ("mean", "cls", "flatten")


class ContrastiveAlignmentConfig(EvalignConfig):
    r"""
    Projection head(s) trained with symmetric InfoNCE so event features land in the target space.

    Args:
        event_dim: width of the event features (input).
        target_dim: width of the target features; the event head outputs this width.
        temperature: initial softmax temperature; the learnable logit scale starts at ``ln(1/temperature)``.
        learnable_temperature: train the logit scale (otherwise it is a fixed buffer).
        max_logit_scale: cap of ``exp(logit_scale)`` (CLIP: 100).
        projection_type: event head, "linear" or "mlp" (Linear-GELU-Linear with ``hidden_dim``).
        hidden_dim: hidden width of the "mlp" head(s).
        use_target_head: also project the targets (width preserved). Off by default so the aligned
            features stay in the frozen target space and feed RGB decoders unchanged.
        contrastive_weight, mse_weight: loss = contrastive_weight * InfoNCE + mse_weight * MSE(aligned, target).
        token_pooling: how token inputs ``[B, N, D]`` are pooled for the loss: "mean", "cls" (token 0) or
            "flatten" (``[B, N * D]``: keeps the spatial layout, which strict window retrieval needs; the
            event and target token counts must match).
        initializer_range: std of the normal init of linear weights.
        target_model_id, target_revision: Hub id (or path) and revision of the frozen target tower.
    """

    model_type = "evalign_contrastive"

    event_dim: int = 768
    target_dim: int = 1024
    temperature: float = 0.07
    learnable_temperature: bool = True
    max_logit_scale: float = 100.0
    projection_type: str = "linear"
    hidden_dim: int = 1024
    use_target_head: bool = False
    contrastive_weight: float = 1.0
    mse_weight: float = 0.0
    token_pooling: str = "mean"
    initializer_range: float = 0.02
    target_model_id: str | None = None
    target_revision: str | None = None

    def __post_init__(self, **kwargs):
        self._check_positive_ints("event_dim", "target_dim", "hidden_dim")
        self._check(self.temperature > 0, "temperature", "> 0")
        self._check(self.max_logit_scale > 0, "max_logit_scale", "> 0")
        self._check(1.0 / self.temperature <= self.max_logit_scale, "temperature",
                    f">= 1 / max_logit_scale = {1.0 / self.max_logit_scale:g}")
        self._check(self.projection_type in PROJECTION_TYPES, "projection_type", f"one of {PROJECTION_TYPES}")
        self._check(self.token_pooling in TOKEN_POOLING, "token_pooling", f"one of {TOKEN_POOLING}")
        self._check(self.contrastive_weight >= 0, "contrastive_weight", ">= 0")
        self._check(self.mse_weight >= 0, "mse_weight", ">= 0")
        self._check(self.contrastive_weight + self.mse_weight > 0, "contrastive_weight",
                    "contrastive_weight + mse_weight > 0")
        self._check(self.initializer_range > 0, "initializer_range", "> 0")
        super().__post_init__(**kwargs)

ContrastiveAlignmentConfig.register_for_auto_class()
