"""Datasets: ``alignment_dataset`` (pre-extracted feature pairs) and ``dsec_builder`` (DSEC windows).

Kept empty on purpose: import the concrete module you need, so importing ``modeling_evalign.data``
never pulls in ``datasets`` or ``h5py``.
"""
