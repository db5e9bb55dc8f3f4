"""Event-camera tools: dense representations, the DSEC reader, an ESIM-style simulator and a
synthetic DSEC writer. Names are imported on first use, so ``import modeling_evalign.events`` loads
neither h5py nor scikit-image.
"""

from __future__ import annotations

from ..utils.lazy_exports import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
