"""Reconstruction bridging: events -> E2VID/FireNet intensity frames -> frozen CLIP.

Kept light: names are imported from their modules on first access.
"""

from __future__ import annotations

from ..utils.lazy_exports import lazy_exports

_LAZY = {
    "E2VIDConfig": "configuration_e2vid",
    "E2VIDModel": "modeling_e2vid",
    "FireNetConfig": "configuration_firenet",
    "FireNetModel": "modeling_firenet",
    "ReconstructionOutput": "outputs",
    "load_original_checkpoint": "checkpoint",
    "convert_original_checkpoint": "checkpoint",
    "ReconstructionAlignmentConfig": "configuration_reconstruction",
    "ReconstructionAlignmentModel": "modeling_reconstruction",
    "ReconstructionAlignmentModule": "modeling_reconstruction",
    "encode_windows": "modeling_reconstruction",
    "clip_preprocess_tensor": "modeling_evalign.features.clip_preprocessing",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
