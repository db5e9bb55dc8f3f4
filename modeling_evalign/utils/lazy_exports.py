"""Module-level ``__getattr__``/``__dir__`` that import a package's public names on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, namespace: dict[str, Any], names: dict[str, str]) -> tuple[Callable, Callable]:
    """``names`` maps a public name to the module defining it (relative to ``package`` unless absolute).

    Use as ``__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)``; a resolved name is
    cached in ``namespace`` so later lookups skip ``__getattr__``.
    """

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        full = module if module.startswith("modeling_evalign") else f"{package}.{module}"
        value = getattr(importlib.import_module(full), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
