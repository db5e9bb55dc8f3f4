"""Checks of a :class:`~modeling_evalign.training.config.TrainConfig` beyond its fields' own: values the loop
would accept silently (a negative clip norm disables clipping, an unknown ``--model_config`` key is saved and
ignored) and settings that would only fail after training (the Hub target)."""

from __future__ import annotations

import dataclasses
import math

from ..utils.checks import check_positive_finite

# strategy -> model_type of its config (training.models.STRATEGY_MODEL_TYPES, repeated to stay import-light)
_MODEL_TYPES = {"lightweight": "evalign_lightweight", "contrastive": "evalign_contrastive",
                "contrastive_image": "evalign_contrastive_image", "triple_modal": "evalign_triple_modal",
                "triple_modal_image": "evalign_triple_modal_image"}


def _finite(name: str, value, low: float, high: float = math.inf, *, open_low: bool = False) -> None:
    ok = isinstance(value, (int, float)) and math.isfinite(value) and (value > low if open_low else value >= low)
    if not ok or value > high:
        bound = f"> {low}" if open_low else f">= {low}"
        raise ValueError(f"TrainConfig.{name}={value!r} is invalid: expected a finite number {bound}"
                         + (f" and <= {high}" if math.isfinite(high) else ""))


def config_fields(strategy: str) -> set[str] | None:
    """Field names of the strategy's model config (None where it cannot be resolved)."""
    from transformers import CONFIG_MAPPING  # the evalign configs are registered by the package's import

    try:
        cls = CONFIG_MAPPING[_MODEL_TYPES[strategy]]
    except KeyError:
        return None
    return {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else None


def validate_train_config(config) -> None:
    """Raise ``ValueError`` (one line naming the field) for values the training loop must never see."""
    check_positive_finite("TrainConfig.learning_rate (--learning_rate)", config.learning_rate)
    _finite("max_grad_norm", config.max_grad_norm, 0.0)  # 0 disables clipping; a negative value is a typo
    _finite("weight_decay", config.weight_decay, 0.0)
    _finite("lora_dropout", config.lora_dropout, 0.0, 1.0)
    if int(config.warmup_steps) < 0:
        raise ValueError(f"TrainConfig.warmup_steps={config.warmup_steps!r} is invalid: expected an integer >= 0")
    if config.stop_at_step is not None and int(config.stop_at_step) < 1:
        raise ValueError(f"TrainConfig.stop_at_step={config.stop_at_step!r} is invalid: expected an integer >= 1 "
                         "(or leave it unset)")
    overrides = config.model_overrides()
    fields = config_fields(config.strategy) if overrides else None
    unknown = sorted(set(overrides) - fields) if fields is not None else []
    if unknown:
        raise ValueError(f"TrainConfig.model_config has unknown key(s) {unknown} for strategy {config.strategy!r}: "
                         f"expected fields of its config, e.g. {sorted(fields - _COMMON)[:12]}")
    if config.push_to_hub:
        from ..hub.push import check_push_target

        ids = [config.hub_model_id] if config.hub_model_id else []
        for repo_id in ids:  # '{duration}' is filled per run: check the shape with a real duration in it
            check_push_target(repo_id.replace("{duration}", "1s"))
        if not ids:
            check_push_target("evalign/check")  # the default id is valid; only offline mode can fail


_COMMON = {"transformers_version", "architectures", "output_hidden_states", "return_dict", "dtype",
           "chunk_size_feed_forward", "is_encoder_decoder", "id2label", "label2id", "problem_type"}
