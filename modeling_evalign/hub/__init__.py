"""Hub side: pushing (``push``), model cards (``cards``, ``templates``), the flat remote-code bundle saved
beside each checkpoint (``remote_code``) and the Auto-class registration (``auto_registration``)."""

from __future__ import annotations

from ..utils.lazy_exports import lazy_exports

# ``modeling_evalign.hub`` was one module before the package was grouped by concern
_LAZY: dict[str, str] = {"push_to_hub": "push", "write_model_card": "cards"}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
