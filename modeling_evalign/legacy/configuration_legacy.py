"""Config of a model converted from the brief's legacy ``.pt`` checkpoints (``modeling_evalign.convert_legacy``)."""

from __future__ import annotations

from typing import Any

from ..configuration_utils import EvalignConfig

LEGACY_ADAPTERS = ("linear", "mlp", "adapter")
LEGACY_SOURCES = ("LightweightAlignmentConfig", "ContrastiveAlignmentConfig")


class LegacyAlignmentConfig(EvalignConfig):
    r"""
    The event path of the brief's ``LightweightAlignmentModel`` / ``ContrastiveAlignmentModel``, kept
    layer for layer so their trained weights load unchanged (inference only).

    Args:
        source_class: the legacy config class: "LightweightAlignmentConfig" (body ``adapter``, then
            ``+ 0.1 * residual_proj(x)`` and ``* scale``) or "ContrastiveAlignmentConfig" (body
            ``event_projector``; the projection heads, logit scale and queue only served the loss).
        event_dim, target_dim, hidden_dim, num_layers, dropout, use_layer_norm: the legacy fields.
        adapter_type: "linear" (one Linear), "mlp" (Linear [LayerNorm] GELU Dropout ... Linear, ``num_layers``
            Linears) or "adapter" (bottleneck ``hidden_dim // 4``: down_proj GELU Dropout up_proj).
        use_residual: lightweight only: add ``0.1 * residual_proj(x)`` (identity when the dims agree).
        use_whitening: lightweight only: whiten with the stored running mean/covariance first.
        whitening_eps: the legacy whitening epsilon (1e-5).
        legacy_config: every field of the pickled legacy config, as found.
        input_description: what the inputs are, e.g. flattened pixels rather than encoder features.
    """

    model_type = "evalign_legacy"

    source_class: str = "LightweightAlignmentConfig"
    event_dim: int = 768
    target_dim: int = 1024
    hidden_dim: int = 512
    num_layers: int = 2
    dropout: float = 0.1
    use_layer_norm: bool = True
    adapter_type: str = "mlp"
    use_residual: bool = True
    use_whitening: bool = False
    whitening_eps: float = 1e-5
    legacy_config: dict[str, Any] | None = None
    input_description: str | None = None

    def __post_init__(self, **kwargs):
        self._check_positive_ints("event_dim", "target_dim", "hidden_dim", "num_layers")
        self._check(self.source_class in LEGACY_SOURCES, "source_class", f"one of {LEGACY_SOURCES}")
        self._check(self.adapter_type in LEGACY_ADAPTERS, "adapter_type", f"one of {LEGACY_ADAPTERS}")
        self._check(self.adapter_type != "adapter" or self.hidden_dim >= 4, "hidden_dim",
                    ">= 4 for the bottleneck adapter (hidden_dim // 4 units)")
        self._check(0.0 <= self.dropout < 1.0, "dropout", "a float in [0, 1)")
        super().__post_init__(**kwargs)

LegacyAlignmentConfig.register_for_auto_class()
