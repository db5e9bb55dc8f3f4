"""Which model each strategy trains: ``build_model(config, data)`` and the strategy -> model_type table."""

from __future__ import annotations

import torch

from .config import TrainConfig
from .data import TrainData

STRATEGY_MODEL_TYPES: dict[str, str] = {
    "lightweight": "evalign_lightweight",
    "contrastive": "evalign_contrastive",
    "contrastive_image": "evalign_contrastive_image",
    "triple_modal": "evalign_triple_modal",
    "triple_modal_image": "evalign_triple_modal_image",
}


def build_model(config: TrainConfig, data: TrainData | None = None, clip_model=None) -> torch.nn.Module:
    """The strategy model: feature strategies take their dims from ``data``; ``model_config`` overrides apply."""
    overrides = config.model_overrides()
    if config.strategy == "lightweight":
        from ..lightweight.configuration_lightweight import LightweightAlignmentConfig
        from ..lightweight.modeling_lightweight import LightweightAlignmentModule

        return LightweightAlignmentModule(
            LightweightAlignmentConfig(event_dim=data.event_dim, target_dim=data.target_dim, **overrides)
        )
    if config.strategy == "contrastive":
        from ..contrastive.configuration_contrastive import ContrastiveAlignmentConfig
        from ..contrastive.modeling_contrastive import ContrastiveAlignmentModule

        return ContrastiveAlignmentModule(
            ContrastiveAlignmentConfig(event_dim=data.event_dim, target_dim=data.target_dim, **overrides)
        )
    if config.strategy == "triple_modal":
        from ..triple_modal.configuration_triple_modal import TripleModalAlignmentConfig
        from ..triple_modal.modeling_triple_modal import TripleModalAlignmentModule

        text_model = config.text_model or config.clip_model
        dims = dict(event_dim=data.event_dim, target_dim=data.target_dim)
        if overrides.get("image_features") == "tokens":  # image side: the RGB tokens; text space: the tower's
            dims = dict(event_dim=data.event_dim, image_token_dim=data.target_dim,
                        target_dim=overrides.pop("target_dim", None) or _text_projection_dim(text_model))
        return TripleModalAlignmentModule(TripleModalAlignmentConfig(
            **dims, class_names=data.class_names, text_model_id=text_model, **overrides,
        ))
    lora = dict(clip_model_name_or_path=config.clip_model, clip_revision=config.clip_revision, lora_r=config.lora_r,
                lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout)
    if config.strategy == "triple_modal_image":
        from ..triple_modal.configuration_triple_modal_image import TripleModalImageAlignmentConfig
        from ..triple_modal.modeling_triple_modal_image import TripleModalImageAlignmentModel

        # text tower None -> the CLIP checkpoint itself (a full CLIP checkpoint holds both towers)
        return TripleModalImageAlignmentModel(TripleModalImageAlignmentConfig(
            **lora, class_names=data.class_names if data else None, text_model_name_or_path=config.text_model,
            **overrides,
        ), clip_model=clip_model)
    from ..contrastive.configuration_contrastive_image import ContrastiveImageAlignmentConfig
    from ..contrastive.modeling_contrastive_image import ContrastiveImageAlignmentModel

    return ContrastiveImageAlignmentModel(ContrastiveImageAlignmentConfig(**lora, **overrides), clip_model=clip_model)


def _text_projection_dim(text_model: str) -> int:
    """``projection_dim`` of a CLIP checkpoint's text tower (config only, no weights)."""
    from transformers import AutoConfig

    clip = AutoConfig.from_pretrained(text_model)
    return int(getattr(clip, "projection_dim", None) or clip.text_config.projection_dim)


def image_size(config: TrainConfig) -> int:
    """Input size of the referenced CLIP vision tower (read from its config; no weights loaded)."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig.from_pretrained(config.clip_model, revision=config.clip_revision).image_size


def strategy_of(model: torch.nn.Module, default: str = "contrastive") -> str:
    """The strategy whose model_type ``model.config`` carries (``default`` for other uniform-interface models)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return next((s for s, t in STRATEGY_MODEL_TYPES.items() if t == model_type), default)


def closed_form_warm_start(config: TrainConfig, model, data: TrainData) -> None:
    """Ridge solution of the whole training split as the starting point (every process computes the same)."""
    rows = [data.train[i] for i in range(len(data.train))]
    event = torch.stack([r["event_features"] for r in rows]).double()
    target = torch.stack([r["target_features"] for r in rows]).double()
    model.fit_closed_form(event, target, ridge=config.closed_form_init)
