"""Reconstruction bridging: events -> E2VID/FireNet intensity frames -> frozen CLIP.

Kept light: names are imported from their modules on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "E2VIDConfig": "configuration_e2vid",
    "E2VIDModel": "modeling_e2vid",
    "FireNetConfig": "configuration_firenet",
    "FireNetModel": "modeling_firenet",
    "ReconstructionOutput": "outputs",
    "load_original_checkpoint": "checkpoint",
    "convert_original_checkpoint": "checkpoint",
    "ReconstructionAlignmentConfig": "configuration_reconstruction",
    "ReconstructionAlignmentModule": "modeling_reconstruction",
    "encode_windows": "modeling_reconstruction",
    "clip_preprocess": "clip_preprocess",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
