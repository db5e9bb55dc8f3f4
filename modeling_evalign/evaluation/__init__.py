"""Evaluation: retrieval/cosine/MSE metrics (``metrics``, ``metrics_hf``), diagnostics (``diagnosis``),
speculative-decoding acceptance (``speculative``), cross-duration matrices (``cross_duration``), plots."""
