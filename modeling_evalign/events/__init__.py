"""Event-camera tools: dense representations, the DSEC reader, an ESIM-style simulator and a
synthetic DSEC writer. Names are imported on first use, so ``import modeling_evalign.events`` loads
neither h5py nor scikit-image.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "voxel_grid": "representations",
    "eventgpt_frames": "representations",
    "count_frames": "representations",
    "event_histogram_image": "representations",
    "check_events": "validation",
    "DsecEventReader": "dsec_reader",
    "DsecSequence": "dsec_reader",
    "EventWindow": "dsec_reader",
    "DsecEventWriter": "dsec_writer",
    "EventSimulator": "simulator",
    "Events": "simulator",
    "simulate_adaptive": "simulator",
    "CameraMotion": "scenes",
    "PhotoScene": "scenes",
    "PHOTOS": "scenes",
    "load_photo": "scenes",
    "SyntheticDsecOptions": "synthetic_dsec",
    "write_synthetic_dsec": "synthetic_dsec",
    "write_synthetic_sequence": "synthetic_dsec",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'modeling_evalign.events' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
