"""Read DSEC event windows and sequence metadata.

All times in this module are in the **image clock** (µs): raw event ``t`` + ``t_offset``, the clock of
``images/timestamps.txt``. HDF5 files are opened lazily on first read and reopened after a fork
(process id check), so a reader can be built in the main process and used in DataLoader workers.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.errors import InputKeyError, InputTypeError
from .dsec_format import (
    DSEC_SENSOR_HEIGHT,
    DSEC_SENSOR_WIDTH,
    EVENT_DTYPES,
    EVENTS_FILE,
    IMAGE_NAME,
    IMAGES_DIR,
    MS_TO_IDX,
    RECTIFY_MAP,
    RECTIFY_MAP_FILE,
    T_OFFSET,
    TIMESTAMPS_FILE,
)
from .recording_checks import check_ms_to_idx

__all__ = ["DsecEventReader", "DsecSequence", "EventWindow"]


@dataclass
class EventWindow:
    """Events with ``t_start_us <= t < t_end_us`` (image clock).

    ``x, y``: uint16 ``[N]`` pixel coordinates (0 <= x < width, 0 <= y < height, unrectified sensor
    pixels as stored in DSEC); ``t``: int64 ``[N]`` µs in the image clock (raw t + t_offset), sorted;
    ``p``: uint8 ``[N]`` polarity in {0, 1}.
    """

    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    p: np.ndarray
    t_start_us: int
    t_end_us: int
    height: int
    width: int

    def __len__(self) -> int:
        return int(self.t.shape[0])

    def to_dict(self) -> dict[str, np.ndarray]:
        """EventGPT's input layout: ``{"x", "y", "t", "p"}`` arrays."""
        return {"x": self.x, "y": self.y, "t": self.t, "p": self.p}


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer number of µs, got {type(value).__name__} {value!r}")
    return int(value)


def _open_h5(h5py, path: Path):
    """``h5py.File(path)``; a damaged file raises ValueError naming it and what is wrong (h5py's OSError
    says neither clearly: a file cut short reports its size against the size its superblock promises)."""
    try:
        return h5py.File(path, "r")
    except OSError as err:
        text = str(err)
        found = re.search(r"eof = (\d+).*stored_eof = (\d+)", text)
        if found:
            have, promised = (int(v) for v in found.groups())
            raise ValueError(
                f"{path} is truncated: its HDF5 superblock promises {promised:,} bytes, file has {have:,}"
            ) from err
        raise ValueError(f"{path}: not a readable HDF5 events file (expected DSEC's events.h5: {text})") from err


def _check_sorted(t: np.ndarray, first_index: int, path: Path) -> None:
    """ValueError naming the first index where ``t`` decreases (a check of the slice just read: O(window))."""
    if t.size > 1:
        drops = np.flatnonzero(t[1:] < t[:-1])
        if drops.size:
            i = first_index + int(drops[0]) + 1
            raise ValueError(
                f"{path}: /events/t is not sorted: t[{i}] = {int(t[i - first_index])} < "
                f"t[{i - 1}] = {int(t[i - first_index - 1])} (first decrease in the window read; DSEC's "
                "t must be non-decreasing)"
            )


class DsecEventReader:
    """Windows of one DSEC ``events.h5``.

    Args:
        path: the ``events.h5`` file, or a sequence directory (``<seq>/events/left/events.h5`` is used).
        height, width: sensor size. Default: from ``rectify_map.h5`` next to the file, else DSEC's
            480 x 640.
    """

    def __init__(self, path: str | os.PathLike, height: int | None = None, width: int | None = None):
        path = Path(path)
        if path.is_dir():
            path = path / EVENTS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"DSEC events file not found: {path}")
        if (height is None) != (width is None):
            raise ValueError("give both height and width, or neither")
        self.path = path
        self._size = (int(height), int(width)) if height is not None else None
        self._file = None
        self._pid: int | None = None
        self._meta: dict[str, Any] | None = None

    # -- lazy, fork-safe HDF5 handle --------------------------------------------------------------
    def _h5(self):
        if self._file is None or self._pid != os.getpid():
            import h5py
            import hdf5plugin  # noqa: F401  (registers the Blosc filter in this process)

            self._file = _open_h5(h5py, self.path)
            self._pid = os.getpid()
            if self._meta is None:
                self._meta = self._validate(self._file)
        return self._file

    def _validate(self, f) -> dict[str, Any]:
        for name, dtype in EVENT_DTYPES.items():
            if name not in f:
                raise InputKeyError(f"{self.path}: missing dataset /{name} (DSEC stores {dtype} there)")
            ds = f[name]
            if ds.dtype.kind not in "ui" or ds.ndim != 1:
                raise InputTypeError(
                    f"{self.path}: /{name} must be a 1-D integer array ({dtype} in DSEC), "
                    f"got {ds.dtype} with shape {ds.shape}"
                )
        lengths = {name: f[name].shape[0] for name in EVENT_DTYPES}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"{self.path}: event arrays differ in length: {lengths}")
        for name in (MS_TO_IDX, T_OFFSET):
            if name not in f:
                raise InputKeyError(f"{self.path}: missing dataset /{name}")
        ms = f[MS_TO_IDX]
        if ms.dtype.kind not in "ui" or ms.ndim != 1 or ms.shape[0] == 0:
            raise InputTypeError(
                f"{self.path}: /{MS_TO_IDX} must be a non-empty 1-D integer array (uint64), "
                f"got {ms.dtype} with shape {ms.shape}"
            )
        off = f[T_OFFSET]
        if off.dtype.kind not in "ui" or off.shape not in ((), (1,)):
            raise InputTypeError(
                f"{self.path}: /{T_OFFSET} must be an integer scalar or shape (1,) (int64), "
                f"got {off.dtype} with shape {off.shape}"
            )
        n = lengths["events/t"]
        check_ms_to_idx(f, self.path, n)  # a corrupt index would silently empty (or widen) windows
        t = f["events/t"]
        last_t = int(t[n - 1]) if n else -1
        end_raw = max(last_t + 1, (ms.shape[0] - 1) * 1000)
        return {
            "n": n,
            "t_offset": int(off[()].reshape(-1)[0]) if off.shape else int(off[()]),
            "end_raw": end_raw,
        }

    @property
    def _m(self) -> dict[str, Any]:
        self._h5()
        return self._meta

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __enter__(self) -> DsecEventReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None  # handles do not survive pickling; reopened on first read
        return state

    # -- metadata ---------------------------------------------------------------------------------
    @property
    def num_events(self) -> int:
        return self._m["n"]

    @property
    def t_offset(self) -> int:
        """Add to raw t to reach the image clock (µs)."""
        return self._m["t_offset"]

    @property
    def time_range_us(self) -> tuple[int, int]:
        """``(start, end)`` of the recording in the image clock: raw 0 (the start of ``ms_to_idx``) to
        the later of the last event + 1 µs and the last ``ms_to_idx`` millisecond."""
        return self.t_offset, self.t_offset + self._m["end_raw"]

    @property
    def duration_us(self) -> int:
        start, end = self.time_range_us
        return end - start

    @property
    def sensor_size(self) -> tuple[int, int]:
        """``(height, width)``: as given, else from ``rectify_map.h5`` next to the file, else 480 x 640."""
        if self._size is None:
            rect = self.path.parent / RECTIFY_MAP_FILE.name
            if rect.is_file():
                import h5py

                with _open_h5(h5py, rect) as f:
                    if RECTIFY_MAP not in f or f[RECTIFY_MAP].ndim != 3 or f[RECTIFY_MAP].shape[2] != 2:
                        raise ValueError(
                            f"{rect}: expected dataset /{RECTIFY_MAP} of shape (height, width, 2)"
                        )
                    self._size = tuple(int(v) for v in f[RECTIFY_MAP].shape[:2])
            else:
                self._size = (DSEC_SENSOR_HEIGHT, DSEC_SENSOR_WIDTH)
        return self._size

    # -- reading ----------------------------------------------------------------------------------
    def read_window(self, t_start_us: int, t_end_us: int) -> EventWindow:
        """Events with ``t_start_us <= t < t_end_us`` (image clock, µs).

        Coarse bounds come from ``ms_to_idx``, exact ones from a binary search on the slice in
        between. Raises ValueError naming the file when the window is reversed or reaches outside
        :attr:`time_range_us`; an empty window inside the recording gives empty arrays.
        """
        t_start_us = _as_int("t_start_us", t_start_us)
        t_end_us = _as_int("t_end_us", t_end_us)
        f = self._h5()
        start, end = self.time_range_us
        if t_end_us < t_start_us:
            raise ValueError(f"{self.path}: window end {t_end_us} is before its start {t_start_us} (µs)")
        if t_start_us < start or t_end_us > end:
            raise ValueError(
                f"{self.path}: window [{t_start_us}, {t_end_us}) µs is outside the recording "
                f"[{start}, {end}) µs (image clock, t_offset = {self.t_offset})"
            )
        a, b = t_start_us - self.t_offset, t_end_us - self.t_offset  # raw clock
        ms = f[MS_TO_IDX]
        n = self.num_events
        i0 = int(ms[min(a // 1000, ms.shape[0] - 1)])  # a table shorter than the events still bounds below
        ms_b = -(-b // 1000)
        i1 = int(ms[ms_b]) if ms_b < ms.shape[0] else n
        i0, i1 = min(i0, n), min(max(i1, i0), n)
        t_raw = f["events/t"][i0:i1]
        _check_sorted(t_raw, i0, self.path)
        lo = i0 + int(np.searchsorted(t_raw, a, side="left"))
        hi = i0 + int(np.searchsorted(t_raw, b, side="left"))
        t = t_raw[lo - i0 : hi - i0].astype(np.int64)
        t += self.t_offset
        h, w = self.sensor_size
        return EventWindow(
            x=f["events/x"][lo:hi],
            y=f["events/y"][lo:hi],
            t=t,
            p=f["events/p"][lo:hi],
            t_start_us=t_start_us,
            t_end_us=t_end_us,
            height=h,
            width=w,
        )


class DsecSequence:
    """One DSEC sequence directory: image timestamps and paths, and its event reader.

    ``image_timestamps_us``: int64 ``[N]`` (image clock, from ``images/timestamps.txt``);
    ``image_path(i)``: ``images/left/rectified/{i:06d}.png``.
    """

    def __init__(self, path: str | os.PathLike, height: int | None = None, width: int | None = None):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"DSEC sequence directory not found: {self.path}")
        self._size = (height, width)
        self._timestamps: np.ndarray | None = None
        self._events: DsecEventReader | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def image_timestamps_us(self) -> np.ndarray:
        if self._timestamps is None:
            file = self.path / TIMESTAMPS_FILE
            if not file.is_file():
                raise FileNotFoundError(f"image timestamps not found: {file}")
            try:
                ts = np.loadtxt(file, dtype=np.int64, ndmin=1)
            except ValueError as err:
                raise ValueError(f"{file}: expected one integer timestamp (µs) per line: {err}") from err
            if ts.size > 1 and np.any(np.diff(ts) <= 0):
                i = int(np.flatnonzero(np.diff(ts) <= 0)[0])
                raise ValueError(
                    f"{file}: timestamps must increase, line {i + 2} ({ts[i + 1]}) <= line {i + 1}"
                )
            self._timestamps = ts
        return self._timestamps

    @property
    def num_images(self) -> int:
        return int(self.image_timestamps_us.shape[0])

    def image_path(self, index: int) -> Path:
        """Path of image ``index``; IndexError outside the timestamps, FileNotFoundError if missing."""
        if not 0 <= index < self.num_images:
            raise IndexError(f"{self.path}: image index {index} outside [0, {self.num_images})")
        path = self.path / IMAGES_DIR / IMAGE_NAME.format(index)
        if not path.is_file():
            raise FileNotFoundError(f"image {index} of {self.path} not found: {path}")
        return path

    def nearest_image(self, t_us: int) -> int:
        """Index of the image whose timestamp is nearest to ``t_us`` (image clock; ties -> earlier)."""
        ts = self.image_timestamps_us
        t_us = _as_int("t_us", t_us)
        i = int(np.searchsorted(ts, t_us))
        if i == 0:
            return 0
        if i == ts.size:
            return ts.size - 1
        return i if ts[i] - t_us < t_us - ts[i - 1] else i - 1

    @property
    def events(self) -> DsecEventReader:
        if self._events is None:
            self._events = DsecEventReader(self.path / EVENTS_FILE, *self._size)
        return self._events

    def synthetic_info(self) -> dict[str, Any]:
        """Contents of ``evalign_synthetic.json`` (written by the synthetic generator: scene, label, motion)."""
        import json

        file = self.path / "evalign_synthetic.json"
        if not file.is_file():
            raise FileNotFoundError(f"{self.path} has no evalign_synthetic.json (not a synthetic sequence)")
        return json.loads(file.read_text())
