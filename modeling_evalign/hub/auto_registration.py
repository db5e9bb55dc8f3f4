"""Register every strategy's config and model with transformers' Auto classes (read from the registry)."""

from __future__ import annotations


def register_strategies() -> None:
    """Idempotent: configs with ``AutoConfig`` now, each model with ``AutoModel`` on its first config."""
    from ..registry import register_auto_classes

    register_auto_classes()
