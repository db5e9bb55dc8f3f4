"""Synthetic DSEC generator: real DSEC layout and dtypes, Blosc, ms_to_idx invariants, determinism,
atomic per-sequence writes with resume, labels, and the command-line wrapper."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest
from PIL import Image

from modeling_evalign.events.dsec_reader import DsecSequence
from modeling_evalign.events.scenes import PHOTOS
from modeling_evalign.events.synthetic_dsec import write_synthetic_dsec

TINY = dict(seconds=0.5, image_size=(96, 72), sensor_size=(64, 48), progress=False)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn") / "a"
    return write_synthetic_dsec(out, sequences=2, seed=3, **TINY)


def read_arrays(seq: Path) -> dict[str, np.ndarray]:
    with h5py.File(seq / "events/left/events.h5", "r") as f:
        return {
            k: f[k][()] for k in ("events/x", "events/y", "events/t", "events/p", "ms_to_idx", "t_offset")
        }


def test_layout_dtypes_and_blosc(tree):
    assert len(tree) == 2 and all(p.is_dir() for p in tree)
    for seq in tree:
        with h5py.File(seq / "events/left/events.h5", "r") as f:
            assert f["events/x"].dtype == np.uint16 and f["events/y"].dtype == np.uint16
            assert f["events/p"].dtype == np.uint8 and f["events/t"].dtype == np.uint32
            assert f["ms_to_idx"].dtype == np.uint64 and f["t_offset"].dtype == np.int64
            for k in "xytp":
                assert "32001" in f[f"events/{k}"]._filters  # Blosc filter id
                assert f[f"events/{k}"]._filters["32001"][6] == 5  # compressor code 5 = zstd
        with h5py.File(seq / "events/left/rectify_map.h5", "r") as f:
            assert f["rectify_map"].shape == (48, 64, 2) and f["rectify_map"].dtype == np.float32
        pngs = sorted((seq / "images/left/rectified").glob("*.png"))
        assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(11)]  # 0.5 s at 20 Hz, both ends
        with Image.open(pngs[3]) as im:
            assert im.size == (96, 72) and im.mode == "RGB"
        info = json.loads((seq / "evalign_synthetic.json").read_text())
        assert info["scene"] in PHOTOS and info["label"] == PHOTOS[info["scene"]] and info["seed"] == 3
        arr = read_arrays(seq)
        stamps = np.loadtxt(seq / "images/timestamps.txt", dtype=np.int64)
        np.testing.assert_array_equal(stamps, int(arr["t_offset"]) + 50_000 * np.arange(11))
        assert info["num_events"] == len(arr["events/t"]) > 100


def test_events_valid_and_ms_to_idx_invariants(tree):
    for seq in tree:
        arr = read_arrays(seq)
        t = arr["events/t"].astype(np.int64)
        assert np.all(np.diff(t) >= 0) and t[-1] <= 500_000
        assert (
            arr["events/x"].max() < 64
            and arr["events/y"].max() < 48
            and set(np.unique(arr["events/p"])) <= {0, 1}
        )
        positive_share = np.count_nonzero(arr["events/p"]) / len(t)
        assert 0.1 < positive_share < 0.9  # both polarities occur
        ms_to_idx = arr["ms_to_idx"].astype(np.int64)
        assert len(ms_to_idx) == 501
        ms = np.arange(len(ms_to_idx))
        inside = ms_to_idx < len(t)
        assert np.all(t[ms_to_idx[inside]] >= ms[inside] * 1000)
        positive = ms_to_idx > 0
        assert np.all(t[ms_to_idx[positive] - 1] < ms[positive] * 1000)
        # the reader sees the whole stream in the image clock
        s = DsecSequence(seq)
        win = s.events.read_window(*s.events.time_range_us)
        np.testing.assert_array_equal(win.t, t + int(arr["t_offset"]))
        assert s.synthetic_info()["scene"] in seq.name


def test_deterministic_per_seed(tree, tmp_path):
    again = write_synthetic_dsec(tmp_path / "b", sequences=2, seed=3, **TINY)
    other = write_synthetic_dsec(tmp_path / "c", sequences=1, seed=4, **TINY)
    for a, b in zip(tree, again):
        assert a.name == b.name
        ra, rb = read_arrays(a), read_arrays(b)
        for k in ra:
            assert ra[k].tobytes() == rb[k].tobytes(), k
        for name in ("000000.png", "000007.png"):
            assert (a / "images/left/rectified" / name).read_bytes() == (
                b / "images/left/rectified" / name
            ).read_bytes()
        assert (a / "images/timestamps.txt").read_text() == (b / "images/timestamps.txt").read_text()
    ro = read_arrays(other[0])
    assert ro["events/t"].tobytes() != read_arrays(tree[0])["events/t"].tobytes()


def test_worker_processes_write_the_same_tree(tree, tmp_path):
    """workers=2 (spawned processes, one sequence each) gives every file byte for byte as one process."""
    parallel = write_synthetic_dsec(tmp_path / "w", sequences=2, seed=3, workers=2, **TINY)
    assert [p.name for p in parallel] == [p.name for p in tree]
    for a, b in zip(tree, parallel):
        files = sorted(f.relative_to(a) for f in a.rglob("*") if f.is_file())
        assert files == sorted(f.relative_to(b) for f in b.rglob("*") if f.is_file())
        for f in files:
            if f.name == "events.h5":  # HDF5 may stamp times in its headers: compare the arrays
                ra, rb = read_arrays(a), read_arrays(b)
                assert all(ra[k].tobytes() == rb[k].tobytes() for k in ra)
            else:
                assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_resume_skips_complete_sequences_and_ignores_leftovers(tmp_path):
    out = tmp_path / "r"
    first = write_synthetic_dsec(out, sequences=1, seed=0, **TINY)
    marker = first[0] / "events/left/events.h5"
    mtime = marker.stat().st_mtime_ns
    (out / ".synthetic_001_x.tmp-deadbeef").mkdir()  # what a killed run leaves: a hidden temp dir
    both = write_synthetic_dsec(out, sequences=2, seed=0, **TINY)
    assert both[0] == first[0] and marker.stat().st_mtime_ns == mtime
    assert (both[1] / "evalign_synthetic.json").is_file()
    visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert visible == sorted(p.name for p in both)


def test_bad_arguments(tmp_path):
    with pytest.raises(KeyError, match="unknown photographs"):
        write_synthetic_dsec(tmp_path, sequences=1, photos=["nope"], **TINY)
    with pytest.raises(ValueError, match="sensor_size must be"):
        write_synthetic_dsec(tmp_path, sequences=1, seed=0, seconds=1, sensor_size=(0, 4))
    with pytest.raises(ValueError, match="sequences must be >= 1"):
        write_synthetic_dsec(tmp_path, sequences=0)
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        write_synthetic_dsec(tmp_path, sequences=2, workers=0, **TINY)


def test_command_line_wrapper(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "make_synthetic_dsec", ROOT / "dataset_scripts/make_synthetic_dsec.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rc = mod.main(
        [
            "--out",
            str(tmp_path / "cli"),
            "--sequences",
            "1",
            "--seconds",
            "0.2",
            "--seed",
            "9",
            "--image-size",
            "32x24",
            "--sensor-size",
            "16x12",
            "--photos",
            "coffee",
            "--no-progress",
        ]
    )
    assert rc == 0
    seq = Path(capsys.readouterr().out.strip())
    assert seq.name == "synthetic_000_coffee"
    with Image.open(seq / "images/left/rectified/000004.png") as im:
        assert im.size == (32, 24)
    with pytest.raises(SystemExit):
        mod.main(["--out", str(tmp_path), "--sensor-size", "640by480"])
