"""DSEC file layout and dtypes, shared by the reader and the writer (uzh-rpg/DSEC, MIT).

A sequence directory::

    <seq>/events/left/events.h5         /events/{x,y} uint16, /events/p uint8, /events/t uint32 (µs),
                                        /ms_to_idx uint64, /t_offset int64 (scalar or shape (1,))
    <seq>/events/left/rectify_map.h5    /rectify_map float32 [height, width, 2]
    <seq>/images/left/rectified/000000.png ...   (20 Hz)
    <seq>/images/timestamps.txt         one image-clock timestamp (µs) per line

``t + t_offset`` is the image clock. ``ms_to_idx[ms]`` is the index of the first event with
``t >= ms * 1000``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

EVENT_DTYPES: dict[str, np.dtype] = {
    "events/x": np.dtype(np.uint16),
    "events/y": np.dtype(np.uint16),
    "events/p": np.dtype(np.uint8),
    "events/t": np.dtype(np.uint32),
}
MS_TO_IDX = "ms_to_idx"
T_OFFSET = "t_offset"
RECTIFY_MAP = "rectify_map"

EVENTS_FILE = Path("events/left/events.h5")
RECTIFY_MAP_FILE = Path("events/left/rectify_map.h5")
IMAGES_DIR = Path("images/left/rectified")
TIMESTAMPS_FILE = Path("images/timestamps.txt")
IMAGE_NAME = "{:06d}.png"

# DSEC's event camera; used only when neither a rectify map nor an explicit size is given
DSEC_SENSOR_HEIGHT = 480
DSEC_SENSOR_WIDTH = 640


def blosc_zstd(clevel: int = 3, cname: str = "zstd", shuffle: str = "bit"):
    """hdf5plugin's Blosc filter: zstd as in DSEC (``cname`` for benchmarks), ``shuffle`` "bit" or "byte".

    Bit shuffle + clevel 3 reads ~1.8x faster than byte shuffle + clevel 1 on simulated events (smaller
    compressed chunks, less zstd work) and still writes fast; see benchmarks/RESULTS.md.
    """
    import hdf5plugin

    modes = {
        "bit": hdf5plugin.Blosc.BITSHUFFLE,
        "byte": hdf5plugin.Blosc.SHUFFLE,
        "none": hdf5plugin.Blosc.NOSHUFFLE,
    }
    if shuffle not in modes:
        raise ValueError(f"shuffle must be one of {sorted(modes)}, got {shuffle!r}")
    return hdf5plugin.Blosc(cname=cname, clevel=clevel, shuffle=modes[shuffle])
