"""Register every strategy's config and model with transformers' Auto classes."""

from __future__ import annotations

import importlib

# (config module, config class, model module, model class); one line per strategy.
STRATEGIES: list[tuple[str, str, str, str]] = [
    ("reconstruction.configuration_e2vid", "E2VIDConfig", "reconstruction.modeling_e2vid", "E2VIDModel"),
    ("reconstruction.configuration_firenet", "FireNetConfig", "reconstruction.modeling_firenet", "FireNetModel"),
    ("reconstruction.configuration_reconstruction", "ReconstructionAlignmentConfig", "reconstruction.modeling_reconstruction", "ReconstructionAlignmentModule"),
    ("lightweight.configuration_lightweight", "LightweightAlignmentConfig", "lightweight.modeling_lightweight", "LightweightAlignmentModule"),
    ("contrastive.configuration_contrastive", "ContrastiveAlignmentConfig", "contrastive.modeling_contrastive", "ContrastiveAlignmentModule"),
    ("contrastive.configuration_contrastive_image", "ContrastiveImageAlignmentConfig", "contrastive.modeling_contrastive_image", "ContrastiveImageAlignmentModel"),
    ("triple_modal.configuration_triple_modal", "TripleModalAlignmentConfig", "triple_modal.modeling_triple_modal", "TripleModalAlignmentModule"),
    ("triple_modal.configuration_triple_modal_image", "TripleModalImageAlignmentConfig", "triple_modal.modeling_triple_modal_image", "TripleModalImageAlignmentModel"),
    ("legacy.configuration_legacy", "LegacyAlignmentConfig", "legacy.modeling_legacy", "LegacyAlignmentModule"),
]

_registered = False


def register_strategies() -> None:
    """Idempotently register configs with AutoConfig and models with AutoModel."""
    global _registered
    if _registered:
        return
    from transformers import AutoConfig, AutoModel

    for config_module, config_name, model_module, model_name in STRATEGIES:
        config_cls = getattr(importlib.import_module(f"modeling_evalign.{config_module}"), config_name)
        model_cls = getattr(importlib.import_module(f"modeling_evalign.{model_module}"), model_name)
        AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
        AutoModel.register(config_cls, model_cls, exist_ok=True)
    _registered = True
