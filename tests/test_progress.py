"""progress_bar: rare refreshes when the stream is not a terminal, per-step redraws on a terminal."""

from __future__ import annotations

import io

import pytest

from modeling_evalign.utils.progress import progress_bar

N = 500


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _redraws(text: str) -> int:
    """tqdm redraws with a carriage return (terminal) or, in a log, a new line per refresh."""
    return text.count("\r")


def test_log_stream_refreshes_rarely(monkeypatch):
    monkeypatch.setenv("EVALIGN_PROGRESS_INTERVAL", "10")
    log = io.StringIO()
    for _ in progress_bar(range(N), file=log, desc="log"):
        pass
    text = log.getvalue()
    # N fast steps well inside one interval: the opening draw and the final one only
    assert 1 <= _redraws(text) <= 3, text
    assert f"{N}/{N}" in text and len(text) < 400


def test_terminal_keeps_per_step_redraws(monkeypatch):
    monkeypatch.setenv("EVALIGN_PROGRESS_INTERVAL", "10")
    tty = FakeTTY()
    # mininterval=0: tqdm's own per-step behaviour (the default 0.1 s would also throttle fast loops)
    for _ in progress_bar(range(N), file=tty, desc="tty", mininterval=0, miniters=1):
        pass
    assert _redraws(tty.getvalue()) >= N  # one redraw per step, the interval setting is not applied
    log = io.StringIO()
    for _ in progress_bar(range(N), file=log, desc="log", mininterval=0):
        pass
    assert _redraws(log.getvalue()) >= N  # an explicit mininterval still wins on a log stream


@pytest.mark.parametrize("bad, match", [("soon", "must be a number"), ("-1", "must be >= 0")])
def test_bad_interval_is_a_named_error(monkeypatch, bad, match):
    monkeypatch.setenv("EVALIGN_PROGRESS_INTERVAL", bad)
    with pytest.raises(ValueError, match=f"EVALIGN_PROGRESS_INTERVAL {match}"):
        progress_bar(range(3), file=io.StringIO())
