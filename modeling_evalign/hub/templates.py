"""Locate the Jinja templates of hub_cards/ (top level of a checkout; packaged in the wheel)."""

from __future__ import annotations

from pathlib import Path


def template_path(name: str) -> Path:
    """Path of ``hub_cards/<name>``; raises FileNotFoundError listing the templates that exist."""
    candidates = [
        Path(__file__).resolve().parents[2] / "hub_cards",  # source checkout / editable install
        Path(__file__).resolve().parent / "hub_cards",  # wheel (see pyproject's package data)
    ]
    for folder in candidates:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p.name for folder in candidates if folder.is_dir() for p in folder.iterdir())
    raise FileNotFoundError(f"card template {name!r} not found in {[str(c) for c in candidates]}; have {found}")
