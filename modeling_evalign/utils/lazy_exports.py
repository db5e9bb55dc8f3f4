"""Module-level ``__getattr__``/``__dir__`` that import a package's public names on first use, and
aliases that keep moved modules importable under their old names."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
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


class _AliasLoader(importlib.abc.Loader):
    """Loader whose "module" is the already-importable target module itself."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module) -> None:  # the target ran its own code when imported
        pass


class _AliasFinder(importlib.abc.MetaPathFinder):
    def __init__(self, aliases: dict[str, str]) -> None:
        self.aliases = aliases

    def find_spec(self, fullname, path=None, target=None):
        new = self.aliases.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new))


def alias_modules(aliases: dict[str, str]) -> None:
    """Keep old dotted module names importable after a move: ``{"pkg.old": "pkg.new.place"}``.

    ``import pkg.old`` then returns the very module object of ``pkg.new.place`` (one copy, so
    ``mock.patch("pkg.old.x")`` patches the real thing). Idempotent.
    """
    for finder in sys.meta_path:
        if isinstance(finder, _AliasFinder):
            finder.aliases.update(aliases)
            return
    sys.meta_path.append(_AliasFinder(dict(aliases)))
