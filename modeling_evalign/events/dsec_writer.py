"""Stream events into a DSEC-format ``events.h5`` (Blosc zstd), computing ``ms_to_idx`` on the fly."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .dsec_format import EVENT_DTYPES, MS_TO_IDX, RECTIFY_MAP, T_OFFSET, blosc_zstd

__all__ = ["DsecEventWriter", "write_rectify_map"]


class DsecEventWriter:
    """Append time-sorted events (raw clock, µs) to a new ``events.h5``; call :meth:`close` with the
    recording's end time to write ``ms_to_idx`` (one entry per ms from 0 to ``ceil(end_us / 1000)``).

    ``chunk_events``: HDF5 chunk length (events) of the four event arrays; events are buffered and
    written in whole chunks. ``clevel``/``cname``/``shuffle``: Blosc settings (see ``blosc_zstd``). The caller makes the file appear atomically (write into a temp dir).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        t_offset: int = 0,
        chunk_events: int = 1 << 17,
        clevel: int = 3,
        cname: str = "zstd",
        shuffle: str = "bit",
    ):
        import h5py

        self.path = Path(path)
        if chunk_events < 1:
            raise ValueError(f"chunk_events must be >= 1, got {chunk_events}")
        self.chunk = int(chunk_events)
        self._f = h5py.File(self.path, "w")
        comp = blosc_zstd(clevel, cname, shuffle)
        self._ds = {
            name: self._f.create_dataset(
                name, shape=(0,), maxshape=(None,), dtype=dt, chunks=(self.chunk,), **comp
            )
            for name, dt in EVENT_DTYPES.items()
        }
        self._f.create_dataset(T_OFFSET, data=np.int64(t_offset))
        self._buf: list[tuple[np.ndarray, ...]] = []
        self._buffered = 0
        self._n = 0  # events written or buffered
        self._last_t = -1
        self._ms_to_idx: list[np.ndarray] = []
        self._next_ms = 0

    def __len__(self) -> int:
        return self._n

    def append(self, x: np.ndarray, y: np.ndarray, t: np.ndarray, p: np.ndarray) -> None:
        """Add events with raw timestamps ``t`` (µs, sorted, not before the previous batch)."""
        t = np.asarray(t, dtype=np.int64)
        if not t.size:
            return
        if t[0] < max(self._last_t, 0) or np.any(t[1:] < t[:-1]):
            raise ValueError(f"{self.path}: events must be appended in time order (t >= {self._last_t})")
        if t[-1] > np.iinfo(np.uint32).max:
            raise ValueError(f"{self.path}: t = {t[-1]} µs does not fit DSEC's uint32 timestamps")
        hi = int(t[-1]) // 1000  # every ms whose start is <= the last t now has its first index known
        if hi >= self._next_ms:
            ms = np.arange(self._next_ms, hi + 1, dtype=np.int64)
            self._ms_to_idx.append(self._n + np.searchsorted(t, ms * 1000, side="left"))
            self._next_ms = hi + 1
        self._buf.append((np.asarray(x), np.asarray(y), np.asarray(p), t))
        self._buffered += t.size
        self._n += t.size
        self._last_t = int(t[-1])
        if self._buffered >= 8 * self.chunk:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if not self._buffered:
            return
        cols = [np.concatenate([b[i] for b in self._buf]) for i in range(4)]
        n = cols[0].size if final else (cols[0].size // self.chunk) * self.chunk
        start = self._ds["events/x"].shape[0]
        for name, col in zip(("events/x", "events/y", "events/p", "events/t"), cols):
            ds = self._ds[name]
            ds.resize((start + n,))
            ds[start:] = col[:n].astype(EVENT_DTYPES[name], copy=False)
        self._buf = [tuple(c[n:] for c in cols)] if n < cols[0].size else []
        self._buffered = cols[0].size - n

    def close(self, end_us: int) -> None:
        """Flush, write ``ms_to_idx`` up to ``ceil(end_us / 1000)`` and close the file."""
        if end_us < self._last_t:
            raise ValueError(f"{self.path}: end_us = {end_us} is before the last event t = {self._last_t}")
        self._flush(final=True)
        last_ms = -(-int(end_us) // 1000)
        if last_ms >= self._next_ms:
            self._ms_to_idx.append(np.full(last_ms + 1 - self._next_ms, self._n, dtype=np.int64))
        table = np.concatenate(self._ms_to_idx) if self._ms_to_idx else np.zeros(1, np.int64)
        self._f.create_dataset(MS_TO_IDX, data=table.astype(np.uint64))
        self._f.close()

    def abort(self) -> None:
        """Close without finishing (the caller discards the file)."""
        self._f.close()


def write_rectify_map(path: str | os.PathLike, height: int, width: int) -> None:
    """Identity ``rectify_map.h5`` (``[height, width, 2]`` float32, x then y): synthetic events are
    simulated directly in rectified coordinates."""
    import h5py

    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset(RECTIFY_MAP, data=np.stack([xs, ys], axis=-1))
