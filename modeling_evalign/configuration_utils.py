"""Shared behaviour of every evalign strategy config (transformers 5 dataclass configs)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from transformers import PreTrainedConfig


class EvalignConfig(PreTrainedConfig):
    """Base class: strict model_type on load and readable validation errors.

    Subclasses declare annotated fields with defaults (transformers turns them into a dataclass),
    set ``model_type = "evalign_<strategy>"`` and validate in ``__post_init__`` with :meth:`_check`.
    Runtime settings (device, paths to data) never belong in a config.
    """

    #: old field name -> field (transformers redirects attribute access); subclasses with renamed fields set it
    #: and call :meth:`_take_renamed` first in ``__post_init__`` so old config.json files and keywords still load.
    #: Towers are named ``<role>_model_id`` (Hub id or local path) + ``<role>_revision`` (None: the default branch).
    attribute_map = {}

    def _take_renamed(self, kwargs: dict[str, Any]) -> None:
        """Move values given under an old field name (``attribute_map``) to the field, before validation."""
        for old, new in type(self).attribute_map.items():
            if old in kwargs:
                setattr(self, new, kwargs.pop(old))

    def __post_init__(self, **kwargs):
        # the first config of a strategy registers its model with AutoModel (registration stays lazy: importing
        # the package never imports transformers' modeling code). Looked up by module name, so a remote-code
        # bundle (flat files, no package) neither copies nor needs the registry.
        registry = sys.modules.get("modeling_evalign.registry")
        if registry is not None:
            registry.register_model_for(type(self))
        super().__post_init__(**kwargs)

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

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs):
        """Save ``config.json`` plus the bundled module files and ``auto_map`` (see ``remote_code``)."""
        from .hub.remote_code import write_bundle
        from .modeling_utils import auto_class_disabled
        from .utils.io_utils import atomic_write_json

        if push_to_hub:
            raise ValueError("push_to_hub is not done inside save_pretrained: use modeling_evalign.hub.push.push_to_hub")
        save_directory = Path(save_directory)
        with auto_class_disabled(self):
            super().save_pretrained(save_directory, **kwargs)
        auto_map = write_bundle(self, save_directory)
        path = save_directory / "config.json"
        config = json.loads(path.read_text())
        config["auto_map"] = {**config.get("auto_map", {}), **auto_map}
        atomic_write_json(path, config)

    def _check_positive_ints(self, *fields: str) -> None:
        for field in fields:
            value = getattr(self, field)
            self._check(isinstance(value, int) and not isinstance(value, bool) and value > 0, field, "a positive int")

    def _check(self, ok: bool, field: str, expected: str) -> None:
        """Raise a ValueError naming the field, its value and what was expected when ``ok`` is false."""
        if not ok:
            raise ValueError(
                f"{type(self).__name__}.{field}={getattr(self, field, None)!r} is invalid: expected {expected}."
            )
