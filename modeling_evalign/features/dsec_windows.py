"""DSEC windows read straight from the recordings, as the builder's rows: the extraction source for real sizes.

``DsecWindows(data_dir, "1s", split="train")`` holds the same windows, in the same order, with the same
fields as ``DsecAlignmentBuilder(config_name="1s", ...).as_dataset("train")`` (window rule, RGB pairing and
split rule of :mod:`modeling_evalign.data.windows`), without building an HF Datasets cache first: a window's
events are read, rendered to EventGPT frames and its RGB PNG decoded only when the row is asked for.
``eventgpt_frames`` is a list of uint8 ``[H, W, 3]`` arrays (the builder's palette PNGs decode to the
same pixels), ``rgb`` a uint8 ``[H, W, 3]`` array.

HDF5: the constructor opens each ``events.h5`` only to read its time range and closes it again, so no
handle exists when DataLoader workers fork; each process then opens the files it reads on first use
(``DsecEventReader`` imports ``hdf5plugin`` there and reopens after a fork). Pickling drops the readers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..data.windows import (
    SPLIT_NAMES,
    assign_splits,
    duration_us,
    nearest_frame_index,
    usable_span,
    window_bounds,
)

logger = logging.getLogger(__name__)


def _scene_and_label(seq_dir: Path):
    from ..data.dsec_builder import _scene_and_label as builder_scene_and_label

    return builder_scene_and_label(seq_dir)


class DsecWindows:
    """Map-style collection of one split's windows (``len``, ``[i]`` -> the builder's example dict).

    ``split=None`` takes every sequence. ``sensor_size=(height, width)`` overrides the size read from the
    recordings (all sequences must agree, as in the builder).
    """

    def __init__(
        self,
        data_dir: str | Path,
        duration: str = "1s",
        split: str | None = None,
        *,
        num_frames: int = 5,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        sensor_size: tuple[int, int] | None = None,
        keep_empty_windows: bool = False,
    ):
        from ..data.dsec_builder import find_sequences
        from ..events.dsec_reader import DsecEventReader, DsecSequence
        from ..events.recording_checks import check_sequence_clocks, empty_windows

        if split is not None and split not in SPLIT_NAMES:
            raise ValueError(f"split must be one of {SPLIT_NAMES} or None, got {split!r}")
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
        self.window_us = duration_us(duration)
        self.num_frames = num_frames
        seqs = find_sequences(data_dir)
        assignment = assign_splits([p.name for p in seqs], val_fraction, test_fraction, split_seed)
        self.split_names = [s for s in SPLIT_NAMES if s in assignment.values()]
        if sensor_size is None:
            sizes = {p.name: DsecEventReader(p).sensor_size for p in seqs}
            if len(set(sizes.values())) != 1:
                raise ValueError(f"sequences have different sensor sizes {sizes}; pass sensor_size")
            sensor_size = next(iter(sizes.values()))
        self.height, self.width = (int(v) for v in sensor_size)
        self.sequence_dirs = [p for p in seqs if split is None or assignment[p.name] == split]
        if not self.sequence_dirs:
            raise ValueError(f"{data_dir}: split {split!r} has no sequence (splits present: {self.split_names})")
        rows, self.empty_windows = [], {}
        for s, seq_dir in enumerate(self.sequence_dirs):
            seq = DsecSequence(seq_dir, self.height, self.width)
            with seq.events as reader:  # opened for the time range and the empty check only, closed before any fork
                check_sequence_clocks(seq, reader.time_range_us)
                start, end = usable_span(*reader.time_range_us, seq.image_timestamps_us)
                bounds = window_bounds(start, end, self.window_us)
                empty = np.zeros(len(bounds), bool) if keep_empty_windows else empty_windows(reader, bounds)
            if empty.any():  # no event: nothing to featurise (the builder skips them the same way)
                self.empty_windows[seq_dir.name] = int(empty.sum())
                logger.warning("sequence %s: skipped %d of %d windows with no event (keep_empty_windows=True "
                               "keeps them)", seq_dir.name, int(empty.sum()), len(bounds))
            frames = nearest_frame_index(seq.image_timestamps_us, bounds[:, 1])
            for k, ((t0, t1), fi) in enumerate(zip(bounds.tolist(), frames.tolist())):
                if not empty[k]:
                    rows.append((s, k, t0, t1, fi))
        self._index = np.asarray(rows, dtype=np.int64).reshape(-1, 5)
        self._scenes = [_scene_and_label(p) for p in self.sequence_dirs]
        self._sequences: dict[int, object] = {}  # per process, filled on first read

    def __len__(self) -> int:
        return int(self._index.shape[0])

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_sequences"] = {}  # HDF5 handles do not cross processes; each worker opens its own
        return state

    def _sequence(self, s: int):
        seq = self._sequences.get(s)
        if seq is None:
            from ..events.dsec_reader import DsecSequence

            seq = self._sequences[s] = DsecSequence(self.sequence_dirs[s], self.height, self.width)
        return seq

    def _row(self, i: int) -> tuple[int, ...]:
        n = len(self)
        if not -n <= int(i) < n:
            raise IndexError(f"window {i} outside [0, {n})")
        return tuple(int(v) for v in self._index[int(i)])

    def window_events(self, i: int):
        """The raw events of window ``i`` (an ``EventWindow``: x, y, t in µs on the image clock, p)."""
        s, _, t0, t1, _ = self._row(i)
        return self._sequence(s).events.read_window(t0, t1)

    def __getitem__(self, i: int) -> dict:
        from ..events.recording_checks import load_rgb
        from ..events.representations import eventgpt_frames

        s, k, t0, t1, fi = self._row(i)
        seq = self._sequence(s)
        w = seq.events.read_window(t0, t1)
        try:
            frames = eventgpt_frames(w.x, w.y, w.t, w.p, self.height, self.width, num_frames=self.num_frames)
        except (ValueError, TypeError) as err:  # x >= width, p = 7, ...: name the file and the window
            raise ValueError(f"{seq.events.path} (sequence {seq.name}, window {k} [{t0}, {t1}) µs): {err}") from None
        rgb = load_rgb(seq.image_path(fi), seq.name, fi)
        scene, label = self._scenes[s]
        return {
            "sequence": self.sequence_dirs[s].name,
            "window_index": k,
            "window_start_us": t0,
            "window_end_us": t1,
            "event_count": int(len(w.t)),
            "rgb": rgb,
            "rgb_timestamp_us": int(seq.image_timestamps_us[fi]),
            "rgb_index": fi,
            "scene": scene,
            "label": label,
            "eventgpt_frames": list(frames),
        }

    def close(self) -> None:
        for seq in self._sequences.values():
            seq.events.close()
        self._sequences.clear()
