"""Checks of a DSEC recording where it is read, so a corrupt one fails naming the file instead of giving
silently empty windows or dropping a sequence: ``ms_to_idx`` consistency, timestamp count against the PNGs,
the event and image clocks overlapping (``t_offset``), PNGs that decode, and events that fit the sensor."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

# ms_to_idx entries compared against /events/t (each is one or two element reads of a compressed chunk)
_SAMPLED_MS = 64


def check_ms_to_idx(f, path: Path, n: int) -> None:
    """``/ms_to_idx`` must be non-decreasing, within ``[0, n]`` and match ``/events/t`` at sampled
    milliseconds: ``t[ms_to_idx[k]] >= 1000 k > t[ms_to_idx[k] - 1]``."""
    ms = np.asarray(f["ms_to_idx"][:], dtype=np.int64)  # one entry per ms: small next to the events
    if ms.size > 1:
        drops = np.flatnonzero(np.diff(ms) < 0)
        if drops.size:
            k = int(drops[0]) + 1
            raise ValueError(f"{path}: /ms_to_idx decreases at ms {k} ({ms[k]} < {ms[k - 1]}): expected "
                             "non-decreasing event indices")
    bad = np.flatnonzero((ms < 0) | (ms > n))
    if bad.size:
        k = int(bad[0])
        raise ValueError(f"{path}: /ms_to_idx[{k}] = {ms[k]} points outside the {n:,} events (expected 0..{n})")
    t = f["events/t"]
    for k in np.unique(np.linspace(0, ms.size - 1, min(_SAMPLED_MS, ms.size)).astype(np.int64)).tolist():
        i = int(ms[k])
        after_ok = i >= n or int(t[i]) >= 1000 * k
        before_ok = i == 0 or int(t[i - 1]) < 1000 * k
        if not (after_ok and before_ok):
            raise ValueError(
                f"{path}: /ms_to_idx[{k}] = {i} does not match /events/t (expected t[{i}] >= {1000 * k} > t[{i - 1}]; "
                f"found t[{i - 1}..{i}] = {[int(v) for v in t[max(i - 1, 0): min(i + 1, n)]]}): the index is corrupt"
            )


def check_sequence_clocks(sequence, event_range_us: tuple[int, int]) -> None:
    """The PNGs and ``timestamps.txt`` must agree in count, and the image clock must overlap the events
    (``t + t_offset``); otherwise the sequence would give no window without a word."""
    from .dsec_format import IMAGES_DIR

    ts = sequence.image_timestamps_us
    images = sequence.path / IMAGES_DIR
    if images.is_dir():
        pngs = sum(1 for _ in images.glob("*.png"))
        if pngs != ts.size:
            raise ValueError(f"sequence {sequence.name}: {images} holds {pngs} PNGs but timestamps.txt lists "
                             f"{ts.size} timestamps: expected one timestamp per image")
    start, end = event_range_us
    if int(ts[-1]) < start or int(ts[0]) >= end:
        raise ValueError(
            f"sequence {sequence.name}: the events span [{start}, {end}) µs on the image clock (t + t_offset, "
            f"t_offset = {start}) but the images span [{int(ts[0])}, {int(ts[-1])}] µs: no overlap (is /t_offset "
            "of events.h5 right?)"
        )


def decoded_png_bytes(path: Path, sequence: str, index: int) -> bytes:
    """The bytes of an image file after checking it decodes; a corrupt one names the file, sequence and index."""
    from PIL import Image, UnidentifiedImageError

    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise ValueError(f"{path} (sequence {sequence}, image {index}): cannot decode it ({err})") from None
    return data


def load_rgb(path: Path, sequence: str, index: int) -> np.ndarray:
    """uint8 ``[H, W, 3]`` of an image file; a corrupt one names the file, sequence and index."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise ValueError(f"{path} (sequence {sequence}, image {index}): cannot decode it ({err})") from None


def check_window_events(window, path: Path, sequence: str, index: int) -> None:
    """Coordinates inside the sensor and polarity 0/1 in one window read; the error names the events file,
    the sequence and the window."""
    from .validation import check_events

    try:
        check_events(window.x, window.y, window.t, window.p, window.height, window.width)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path} (sequence {sequence}, window {index}): {err}") from None


def empty_windows(reader, bounds: np.ndarray) -> np.ndarray:
    """bool ``[K]``: which ``[t0, t1)`` windows (image clock) hold no event. ``ms_to_idx`` proves most windows
    non-empty without reading ``t``; only the rest are read."""
    if len(bounds) == 0:
        return np.zeros(0, dtype=bool)
    ms = reader._h5()["ms_to_idx"]
    table = np.asarray(ms[:], dtype=np.int64)
    raw = np.asarray(bounds, dtype=np.int64) - reader.t_offset
    lo = np.clip(-(-raw[:, 0] // 1000), 0, table.size - 1)  # first whole ms inside the window
    hi = np.clip(raw[:, 1] // 1000, 0, table.size - 1)  # events before this ms are before t1
    surely = (hi > lo) & (table[hi] > table[lo])
    out = np.zeros(len(bounds), dtype=bool)
    for k in np.flatnonzero(~surely).tolist():
        out[k] = len(reader.read_window(int(bounds[k, 0]), int(bounds[k, 1]))) == 0
    return out
