"""Atomic file and directory writes: a killed process never leaves a half-written artefact behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file that appears at ``path`` only once the block completes (temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600: others on a shared disk could not read
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same directory, then rename."""
    with atomic_open(path) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (``os.umask`` must set it to read it)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Every directory evalign writes as a whole lists its own entries here, so a later write replaces exactly
# what evalign wrote before and nothing a user put beside it.
MANIFEST_NAME = ".evalign-manifest.json"


def owned_entries(directory: str | os.PathLike) -> set[str] | None:
    """Names evalign wrote into ``directory`` (its manifest), or None where it has no (readable) manifest."""
    try:
        entries = json.loads((Path(directory) / MANIFEST_NAME).read_text()).get("entries")
    except (OSError, ValueError, AttributeError):
        return None
    return {str(e) for e in entries} if isinstance(entries, list) else None


def foreign_entries(directory: str | os.PathLike) -> list[str]:
    """Entries of an existing ``directory`` that evalign did not write (all of them where it has no manifest)."""
    directory = Path(directory)
    ours = owned_entries(directory) or set()
    return sorted(p.name for p in directory.iterdir() if p.name != MANIFEST_NAME and p.name not in ours)


def check_output_directory(dest: str | os.PathLike, *, keep_foreign: bool = False) -> None:
    """Raise before any work if writing the directory ``dest`` would cost a user's file.

    A file at ``dest`` is refused (never moved aside). A non-empty directory without evalign's manifest is
    refused unless ``keep_foreign`` (then its entries are carried into the new directory, as
    ``save_pretrained`` keeps a model card beside the weights). A directory evalign wrote before is fine: its
    foreign entries are carried over.
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise FileExistsError(f"output {dest} exists and is not a directory: choose a directory path "
                              "(evalign never moves a file aside)")
    if dest.is_dir() and not keep_foreign and owned_entries(dest) is None:
        foreign = foreign_entries(dest)
        if foreign:
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            raise FileExistsError(
                f"output directory {dest} holds {foreign[0]!r}{more}, which evalign did not write: refusing to "
                "replace it (choose a new or empty directory)"
            )


def _carry(src: Path, dest: Path) -> None:
    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dest, symlinks=True)
    else:
        shutil.copy2(src, dest, follow_symlinks=False)


@contextlib.contextmanager
def atomic_directory(dest: str | os.PathLike, *, keep_foreign: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``dest``; on success it replaces ``dest`` in one rename.

    Only what evalign wrote is replaced: the new directory gets a manifest of its entries, and entries of the
    old ``dest`` that are not in its manifest (a user's files) are copied into the new one first; see
    :func:`check_output_directory` for what is refused. On error the temporary directory is removed and
    ``dest`` is left untouched.
    """
    dest = Path(dest)
    check_output_directory(dest, keep_foreign=keep_foreign)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        ours = sorted(p.name for p in tmp.iterdir() if p.name != MANIFEST_NAME)
        check_output_directory(dest, keep_foreign=keep_foreign)  # again: the work may have taken a while
        if dest.is_dir():
            managed = owned_entries(dest) is not None
            for name in foreign_entries(dest):
                if name not in ours:
                    _carry(dest / name, tmp / name)
                elif managed:  # without a manifest, keep_foreign's files of our names are ours (config.json)
                    raise FileExistsError(f"output directory {dest} holds {name!r}, which evalign did not write "
                                          "and would now overwrite: move it away first")
        (tmp / MANIFEST_NAME).write_text(json.dumps({"entries": ours}, indent=1) + "\n")
        replace_directory(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_directory(src: Path, dest: Path) -> None:
    """Move ``src`` to ``dest``; an existing ``dest`` directory is swapped out first, then deleted (a file at
    ``dest`` is refused, never moved aside)."""
    if dest.exists() and not dest.is_dir():
        raise FileExistsError(f"output {dest} exists and is not a directory: choose a directory path")
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(dest, old)
        os.replace(src, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dest)
