"""Datasets: ``alignment_dataset`` (pre-extracted feature pairs) and ``dsec_builder`` (DSEC windows).

Names are imported on first use, so importing ``modeling_evalign.data`` pulls in neither
``datasets`` nor ``h5py``.
"""

from __future__ import annotations

from ..utils.lazy_exports import lazy_exports

_LAZY: dict[str, str] = {
    "AlignmentDataset": "alignment_dataset",
    "DsecAlignmentBuilder": "dsec_builder",
    "DsecAlignmentConfig": "dsec_builder",
    "export_dsec": "export",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
