"""Flat bundles of module files so saved checkpoints load with ``trust_remote_code=True``.

transformers copies a model's module file and the files it imports *relatively from the same
directory* (``from .x import y``). Our code lives in per-strategy sub-packages and shares helpers
(``from ..modeling_utils import ...``), which transformers cannot follow. On save we therefore
collect every package module the model and config depend on (transitively), rewrite their
package-relative imports to flat ``from .<module> import`` and copy them beside ``config.json``.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

PACKAGE = "modeling_evalign"


def _resolve(module_name: str, node: ast.ImportFrom) -> str | None:
    """Absolute name of the module an ImportFrom node refers to, or None when it is not ours."""
    if node.level == 0:
        name = node.module or ""
        return name if name == PACKAGE or name.startswith(PACKAGE + ".") else None
    is_package = module_name.rsplit(".", 1)[-1] == "__init__"
    parts = module_name.split(".")
    base = parts[: len(parts) - node.level + (1 if is_package else 0)]
    if not base:
        raise ValueError(f"relative import beyond the top level in {module_name}")
    return ".".join(base + ([node.module] if node.module else []))


def _module_file(name: str) -> Path:
    module = sys.modules.get(name) or importlib.import_module(name)
    file = getattr(module, "__file__", None)
    if file is None or Path(file).name == "__init__.py":
        raise ValueError(
            f"remote-code bundling needs imports of concrete modules, not packages: {name!r}. "
            "Import from the module file that defines the object (e.g. 'from ..events.voxel import x')."
        )
    return Path(file)


def collect_bundle(*module_names: str) -> dict[str, str]:
    """Return ``{flat_file_name: rewritten_source}`` for the given modules and their package deps."""
    bundle: dict[str, str] = {}
    owners: dict[str, str] = {}
    todo = list(module_names)
    while todo:
        name = todo.pop()
        path = _module_file(name)
        flat = path.name
        if flat in owners:
            if owners[flat] != name:
                raise ValueError(f"two modules would share the flat file name {flat}: {owners[flat]} and {name}")
            continue
        owners[flat] = name
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
        lines = source.splitlines(keepends=True)
        edits: list[tuple[int, int, str, str]] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                        raise ValueError(f"{path}: use 'from ... import' for package modules, not 'import {alias.name}'")
            if not isinstance(node, ast.ImportFrom):
                continue
            target = _resolve(name, node)
            if target is None:
                continue
            if node.module is None:
                raise ValueError(f"{path}:{node.lineno}: 'from . import x' cannot be bundled; import from the module")
            todo.append(target)
            line = lines[node.lineno - 1]
            old = ("." * node.level + node.module) if node.level else node.module
            new = "." + target.rsplit(".", 1)[-1]
            edits.append((node.lineno - 1, node.col_offset, old, new))
        for lineno, col, old, new in sorted(edits, reverse=True):
            line = lines[lineno]
            start = line.index(old, col)
            lines[lineno] = line[:start] + new + line[start + len(old):]
        bundle[flat] = "".join(lines)
    return bundle


def write_bundle(model_or_config, directory: Path) -> dict[str, str]:
    """Copy the bundle for a model (and its config) into ``directory``; return the ``auto_map``."""
    from ..utils.io_utils import atomic_write_text

    config = getattr(model_or_config, "config", model_or_config)
    modules = [type(config).__module__]
    auto_map = {"AutoConfig": f"{type(config).__module__.rsplit('.', 1)[-1]}.{type(config).__name__}"}
    if model_or_config is not config:
        cls = type(model_or_config)
        modules.append(cls.__module__)
        auto_class = getattr(cls, "_auto_class", None) or "AutoModel"
        auto_map[auto_class] = f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}"
    for flat, source in collect_bundle(*modules).items():
        atomic_write_text(directory / flat, source)
    return auto_map
