"""A tiny synthetic DSEC tree shared by the builder, export and extraction tests (made once per session)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SENSOR = (64, 48)  # (width, height)
IMAGE = (96, 72)
SECONDS = 3.0


def synthetic_tree(tmp_path_factory) -> Path:
    """Two 3 s sequences; write_synthetic_dsec skips complete sequences, so later calls are free."""
    from modeling_evalign.events.synthetic_dsec import write_synthetic_dsec

    root = tmp_path_factory.getbasetemp() / "h4_dsec_tree"
    write_synthetic_dsec(
        root, sequences=2, seconds=SECONDS, seed=3, image_size=IMAGE, sensor_size=SENSOR, progress=False
    )
    return root


def raw_sequence(seq_dir: Path) -> dict:
    """The raw arrays of one sequence read with h5py directly (independent of the package's reader)."""
    import h5py
    import hdf5plugin  # noqa: F401

    with h5py.File(seq_dir / "events/left/events.h5", "r") as f:
        ev = {k: f[f"events/{k}"][:] for k in "xytp"}
        offset = int(np.asarray(f["t_offset"][()]).reshape(-1)[0])
        n_ms = int(f["ms_to_idx"].shape[0])
    timestamps = [int(line) for line in (seq_dir / "images/timestamps.txt").read_text().split()]
    return {"events": ev, "t_offset": offset, "n_ms": n_ms, "timestamps": timestamps}
