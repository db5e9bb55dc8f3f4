"""Shared behaviour of every evalign strategy config (transformers 5 dataclass configs)."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedConfig


class EvalignConfig(PreTrainedConfig):
    """Base class: strict model_type on load and readable validation errors.

    Subclasses declare annotated fields with defaults (transformers turns them into a dataclass),
    set ``model_type = "evalign_<strategy>"`` and validate in ``__post_init__`` with :meth:`_check`.
    Runtime settings (device, paths to data) never belong in a config.
    """

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs):
        found = config_dict.get("model_type")
        expected = getattr(cls, "model_type", "")
        if found and expected and found != expected:
            raise ValueError(
                f"{cls.__name__} cannot load a config with model_type={found!r}: expected {expected!r}. "
                "Load it with AutoConfig/AutoModel or the matching evalign class."
            )
        return super().from_dict(config_dict, **kwargs)

    def _check(self, ok: bool, field: str, expected: str) -> None:
        """Raise a ValueError naming the field, its value and what was expected when ``ok`` is false."""
        if not ok:
            raise ValueError(
                f"{type(self).__name__}.{field}={getattr(self, field, None)!r} is invalid: expected {expected}."
            )
