"""No machine path in an uploaded file: tower references, repo ids and path stripping for checkpoint files.

A checkpoint's ``config.json``, ``training_info.json`` and card are uploaded as they are, so a local path in
them (the proxy tower's cache under the home directory, the training machine's data directories) would
publish the training machine's layout and mean nothing to a visitor. :func:`strip_machine_paths` turns every
local path into a path relative to the checkpoint (when both sit under one project directory) or into the
path's name; :func:`tower_reference` is the one place that knows which config field names the frozen tower.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# (id field, revision field, tower loaded when the model is built) of the frozen tower in each strategy's config,
# first match wins. THE accessor of the tower's fields: a renaming of those fields changes these lines only.
TOWER_FIELDS: tuple[tuple[str, str, bool], ...] = (
    ("clip_model_id", "clip_revision", True),  # contrastive_image, triple_modal_image, reconstruction
    ("text_model_id", "text_revision", False),  # triple_modal: text tower loaded for zero-shot prompts only
)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
# an absolute POSIX path (not the '//' of a URL, not 'e2t/R@1'), a home-relative one, or a Windows drive path
_MACHINE_PATH = re.compile(r"(?<![\w:/.@-])(?:~/|/(?:[\w.+-]+/)+)[\w.+-]*|\b[A-Za-z]:\\[\w\\.-]+")


def _get(config: Any, name: str) -> Any:
    return config.get(name) if isinstance(config, Mapping) else getattr(config, name, None)


def tower_reference(config: Any) -> tuple[str | None, str | None]:
    """``(id or path, revision)`` of the frozen tower a model config (object or dict) references, else
    ``(None, None)`` (feature strategies hold no tower)."""
    for id_field, revision_field, _ in TOWER_FIELDS:
        value = _get(config, id_field)
        if isinstance(value, str) and value:
            return value, _get(config, revision_field)
    return None, None


def point_tower_at(config: Any, name_or_path: str) -> None:
    """Set the tower reference of a loaded model's config (in memory) to a local directory: a checkpoint
    stores only the tower's name when the tower was local, so a local run re-attaches it this way."""
    field, _ = tower_field(config)
    if field is not None:
        setattr(config, field, str(name_or_path))


def tower_field(config: Any) -> tuple[str | None, bool]:
    """``(name of the config field holding the tower reference, whether building the model loads it)``."""
    for id_field, _, loaded_at_build in TOWER_FIELDS:
        if isinstance(_get(config, id_field), str):
            return id_field, loaded_at_build
    return None, False


def is_local_path(value: str) -> bool:
    """True for an absolute or home-relative path, or a relative one that exists here (a local checkpoint)."""
    if not isinstance(value, str) or not value or "\n" in value or len(value) > 4096:
        return False
    if value.startswith("~") or os.path.isabs(value) or re.match(r"^[A-Za-z]:[\\/]", value):
        return True
    # './x' and '../x' are already portable (relative to the checkpoint when this module wrote them)
    return ("/" in value or os.sep in value) and not value.startswith(".") and Path(value).exists()


def hub_repo_id(value: str | None) -> str | None:
    """``value`` when it is a Hub repo id (``namespace/name``, not a local directory), else None."""
    if not isinstance(value, str) or not _REPO_ID.match(value) or is_local_path(value):
        return None
    return value


def _project_root(a: Path, b: Path) -> Path | None:
    """The deepest common directory of ``a`` and ``b`` when it is a project directory (not /, not the home
    directory or one of its parents, not the temp root), else None."""
    try:
        common = Path(os.path.commonpath([a, b]))
    except ValueError:  # different drives
        return None
    home = Path.home().resolve()
    if len(common.parts) < 3 or common == home or common in home.parents or str(common) in ("/tmp", "/var/tmp"):
        return None
    return common


def portable_path(value: str, folder: str | os.PathLike | None, *, name_only: bool = False) -> str:
    """A local path as uploaded: relative to ``folder`` (the checkpoint) when both sit under one project
    directory and ``name_only`` is False, else the path's last component. Other strings pass unchanged."""
    if not is_local_path(value):
        return value
    path = Path(value).expanduser().resolve()
    if folder is not None and not name_only:
        base = Path(folder).resolve()
        if _project_root(path, base) is not None:
            return Path(os.path.relpath(path, base)).as_posix()
    return path.name or value


def strip_machine_paths(obj: Any, folder: str | os.PathLike | None = None, *, name_only: bool = False) -> Any:
    """``obj`` (JSON-like) with every local-path string made portable (see :func:`portable_path`); keys kept."""
    if isinstance(obj, Mapping):
        return {k: strip_machine_paths(v, folder, name_only=name_only) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strip_machine_paths(v, folder, name_only=name_only) for v in obj]
    if isinstance(obj, str):
        return portable_path(obj, folder, name_only=name_only)
    return obj


def find_machine_paths(text: str, extra: tuple[str, ...] = ()) -> list[str]:
    """Absolute / home-relative paths found in ``text`` (and any of the ``extra`` literal strings)."""
    found = [m.group(0) for m in _MACHINE_PATH.finditer(text)]
    return found + [s for s in extra if s and s in text]


__all__ = ["TOWER_FIELDS", "find_machine_paths", "hub_repo_id", "is_local_path", "point_tower_at",
           "portable_path", "strip_machine_paths", "tower_field", "tower_reference"]
