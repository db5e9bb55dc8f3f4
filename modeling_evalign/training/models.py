"""Which model each strategy trains: ``build_model(config, data)``, read from the strategy registry."""

from __future__ import annotations

import torch

from ..registry import get_strategy, resolve, spec_of
from .config import TrainConfig
from .data import TrainData


def build_model(config: TrainConfig, data: TrainData | None = None, clip_model=None) -> torch.nn.Module:
    """The strategy model: its spec's ``build`` (feature strategies take their dims from ``data``), or
    ``config_class(event_dim=, target_dim=, **overrides)``; ``model_config`` overrides apply."""
    spec = get_strategy(config.strategy)
    overrides = config.model_overrides()
    if spec.build is not None:
        return resolve(spec.build)(config, data, overrides, clip_model)
    config_class = spec.get_config_class()
    return spec.get_model_class()(config_class(event_dim=data.event_dim, target_dim=data.target_dim, **overrides))


def model_type(strategy: str) -> str:
    return get_strategy(strategy).model_type


def image_size(config: TrainConfig) -> int:
    """Input size of the referenced CLIP vision tower (read from its config; no weights loaded)."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig.from_pretrained(config.clip_model, revision=config.clip_revision).image_size


def strategy_of(model: torch.nn.Module, default: str = "contrastive") -> str:
    """The strategy whose model_type ``model.config`` carries (``default`` for other uniform-interface models)."""
    spec = spec_of(model)
    return spec.name if spec is not None and spec.trainable else default


def closed_form_warm_start(config: TrainConfig, model, data: TrainData) -> None:
    """Ridge solution of the whole training split as the starting point (every process computes the same)."""
    rows = [data.train[i] for i in range(len(data.train))]
    event = torch.stack([r["event_features"] for r in rows]).double()
    target = torch.stack([r["target_features"] for r in rows]).double()
    model.fit_closed_form(event, target, ridge=config.closed_form_init)
