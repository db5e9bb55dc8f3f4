"""Progress bars that suit both terminals and log files.

On a terminal a bar redraws often; when stderr is redirected (``make demo > log 2>&1``, CI, a job
scheduler) tqdm's carriage-return redraws pile up as one huge line, so there the bar refreshes at
most every ``EVALIGN_PROGRESS_INTERVAL`` seconds (default 10) and never by iteration count.
"""

from __future__ import annotations

import os
import sys
from typing import Any

DEFAULT_LOG_INTERVAL_S = 10.0


def _stream_is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # closed stream
        return False


def log_interval_s() -> float:
    """Seconds between refreshes when the output is not a terminal (``EVALIGN_PROGRESS_INTERVAL``)."""
    raw = os.environ.get("EVALIGN_PROGRESS_INTERVAL")
    if raw is None:
        return DEFAULT_LOG_INTERVAL_S
    try:
        value = float(raw)
    except ValueError as err:
        raise ValueError(f"EVALIGN_PROGRESS_INTERVAL must be a number of seconds, got {raw!r}") from err
    if value < 0:
        raise ValueError(f"EVALIGN_PROGRESS_INTERVAL must be >= 0 seconds, got {value}")
    return value


def progress_bar(iterable: Any = None, **kwargs: Any):
    """``tqdm(iterable, **kwargs)`` with log-friendly refresh settings when not writing to a terminal.

    Accepts every tqdm keyword (``total``, ``desc``, ``unit``, ``disable``, ``initial`` ...); explicit
    ``mininterval``/``miniters`` win over the defaults chosen here.
    """
    from tqdm.auto import tqdm

    stream = kwargs.get("file") or sys.stderr
    if not _stream_is_terminal(stream):
        interval = log_interval_s()
        kwargs.setdefault("mininterval", interval)
        kwargs.setdefault("maxinterval", max(interval, 10.0))
        # tqdm's miniters=0 with dynamic_miniters adapts to the rate; fixed 1 + mininterval caps by time
        kwargs.setdefault("miniters", 1)
        kwargs.setdefault("dynamic_ncols", False)
        kwargs.setdefault("ncols", 100)
    return tqdm(iterable, **kwargs)
