"""The main job (``python -m modeling_evalign.pipeline``): synthetic DSEC tree -> datasets -> features ->
training -> one metrics table. The stages live in ``job``."""

from __future__ import annotations

from ..utils.lazy_exports import lazy_exports

_LAZY: dict[str, str] = {name: "job" for name in ("COLUMNS", "PipelineConfig", "format_table", "main", "run_pipeline")}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
