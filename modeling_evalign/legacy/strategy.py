"""The brief's legacy ``.pt`` checkpoints as HF models (Auto classes only; converted, never trained)."""

from __future__ import annotations

from ..registry import StrategySpec, register_strategy

register_strategy(StrategySpec(
    name="legacy",
    config_class="modeling_evalign.legacy.configuration_legacy:LegacyAlignmentConfig",
    model_class="modeling_evalign.legacy.modeling_legacy:LegacyAlignmentModel",
    model_type="evalign_legacy",
))
