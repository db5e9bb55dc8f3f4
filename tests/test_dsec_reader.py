"""DSEC reader: windows equal a brute-force mask on the raw arrays (with t_offset), ms_to_idx
invariants, lazy/fork-safe opening, and errors that name the file."""

from __future__ import annotations

import pickle

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest

from modeling_evalign.events.dsec_format import EVENTS_FILE, IMAGE_NAME, IMAGES_DIR, TIMESTAMPS_FILE
from modeling_evalign.events.dsec_reader import DsecEventReader, DsecSequence
from modeling_evalign.events.dsec_writer import DsecEventWriter, write_rectify_map

T_OFFSET = 123_456_789


def random_events(n=20_000, duration_us=3_000_000, seed=0, width=50, height=40):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, duration_us, n))
    if n < 700:
        return {
            "x": rng.integers(0, width, n).astype(np.uint16),
            "y": rng.integers(0, height, n).astype(np.uint16),
            "t": t,
            "p": rng.integers(0, 2, n).astype(np.uint8),
        }
    t[100:110] = t[100]  # duplicates
    t[-5:] = t[-6]
    t[500:600] = (t[500] // 1000) * 1000  # events exactly on a millisecond boundary
    t = np.sort(t)
    return {
        "x": rng.integers(0, width, n).astype(np.uint16),
        "y": rng.integers(0, height, n).astype(np.uint16),
        "t": t,
        "p": rng.integers(0, 2, n).astype(np.uint8),
    }


def write_file(path, ev, end_us, t_offset=T_OFFSET, batches=7, chunk=1000):
    w = DsecEventWriter(path, t_offset=t_offset, chunk_events=chunk)
    for idx in np.array_split(np.arange(len(ev["t"])), batches):
        w.append(ev["x"][idx], ev["y"][idx], ev["t"][idx], ev["p"][idx])
    w.close(end_us)
    return path


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    d = tmp_path_factory.mktemp("dsec")
    ev = random_events()
    path = write_file(d / "events.h5", ev, 3_000_000)
    write_rectify_map(d / "rectify_map.h5", 40, 50)
    return path, ev


def test_file_layout_and_ms_to_idx_invariants(recording):
    path, ev = recording
    with h5py.File(path, "r") as f:
        assert {k: f[f"events/{k}"].dtype for k in "xytp"} == {
            "x": np.uint16,
            "y": np.uint16,
            "t": np.uint32,
            "p": np.uint8,
        }
        assert "32001" in f["events/t"]._filters  # Blosc
        t = f["events/t"][:].astype(np.int64)
        ms_to_idx = f["ms_to_idx"][:]
        assert ms_to_idx.dtype == np.uint64 and f["t_offset"].dtype == np.int64
        assert int(f["t_offset"][()]) == T_OFFSET
    np.testing.assert_array_equal(t, ev["t"])
    assert len(ms_to_idx) == 3001
    for ms, idx in enumerate(ms_to_idx.astype(np.int64)):
        if idx < len(t):
            assert t[idx] >= ms * 1000
        if idx > 0:
            assert t[idx - 1] < ms * 1000


def test_windows_equal_brute_force_mask(recording):
    path, ev = recording
    reader = DsecEventReader(path)
    assert reader._file is None  # nothing opened in __init__
    assert reader.sensor_size == (40, 50) and reader.t_offset == T_OFFSET
    assert reader.time_range_us == (T_OFFSET, T_OFFSET + 3_000_000)
    rng = np.random.default_rng(1)
    t_img = ev["t"] + T_OFFSET
    starts = list(rng.integers(T_OFFSET, T_OFFSET + 3_000_000, 30)) + [
        T_OFFSET,
        int(t_img[100]),
        int(t_img[500]),
        int(t_img[500]) - 1,
        T_OFFSET + 2_999_000,
    ]
    for s in starts:
        for length in (0, 1, 999, 1000, 1001, 123_457, 3_000_000):
            e = min(int(s) + length, T_OFFSET + 3_000_000)
            win = reader.read_window(int(s), e)
            mask = (t_img >= s) & (t_img < e)
            np.testing.assert_array_equal(win.t, t_img[mask])
            for k in "xyp":
                np.testing.assert_array_equal(getattr(win, k), ev[k][mask])
            assert win.t.dtype == np.int64 and win.x.dtype == np.uint16 and win.p.dtype == np.uint8
    whole = reader.read_window(*reader.time_range_us)
    assert len(whole) == len(ev["t"])


def test_t_offset_of_shape_one_and_explicit_sensor_size(tmp_path):
    ev = random_events(n=500, duration_us=10_000, seed=4)
    path = write_file(tmp_path / "events.h5", ev, 10_000, t_offset=0)
    with h5py.File(path, "a") as f:
        del f["t_offset"]
        f.create_dataset("t_offset", data=np.array([5_000_000], dtype=np.int64))
    reader = DsecEventReader(path, height=480, width=640)
    win = reader.read_window(5_002_000, 5_007_500)
    mask = (ev["t"] >= 2000) & (ev["t"] < 7500)
    np.testing.assert_array_equal(win.t, ev["t"][mask] + 5_000_000)
    assert (win.height, win.width) == (480, 640)
    assert DsecEventReader(path).sensor_size == (480, 640)  # no rectify map: DSEC default


def test_short_ms_to_idx_table_still_reads_exactly(tmp_path):
    ev = random_events(n=2000, duration_us=50_000, seed=6)
    path = write_file(tmp_path / "events.h5", ev, 50_000, t_offset=0)
    with h5py.File(path, "a") as f:
        table = f["ms_to_idx"][:20]  # covers only the first 19 ms
        del f["ms_to_idx"]
        f.create_dataset("ms_to_idx", data=table)
    reader = DsecEventReader(path)
    assert reader.time_range_us == (0, int(ev["t"][-1]) + 1)
    for a, b in [(25_000, 40_000), (0, int(ev["t"][-1]) + 1), (18_500, 19_500)]:
        np.testing.assert_array_equal(reader.read_window(a, b).t, ev["t"][(ev["t"] >= a) & (ev["t"] < b)])


def test_reopens_after_fork_and_pickles(recording):
    path, ev = recording
    reader = DsecEventReader(path)
    first = reader.read_window(T_OFFSET + 1000, T_OFFSET + 50_000)
    handle = reader._file
    reader._pid = -1  # as seen from a forked worker
    again = reader.read_window(T_OFFSET + 1000, T_OFFSET + 50_000)
    assert reader._file is not handle
    np.testing.assert_array_equal(first.t, again.t)
    clone = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(clone.read_window(T_OFFSET + 1000, T_OFFSET + 50_000).x, first.x)
    reader.close()
    clone.close()


def test_window_errors_name_the_file(recording):
    path, _ = recording
    reader = DsecEventReader(path)
    with pytest.raises(ValueError, match=rf"{path}.*outside the recording"):
        reader.read_window(T_OFFSET - 1, T_OFFSET + 1000)
    with pytest.raises(ValueError, match=rf"{path}.*outside the recording"):
        reader.read_window(T_OFFSET + 2_999_000, T_OFFSET + 3_000_001)
    with pytest.raises(ValueError, match=rf"{path}.*before its start"):
        reader.read_window(T_OFFSET + 5000, T_OFFSET + 4000)
    with pytest.raises(TypeError, match="t_start_us must be an integer"):
        reader.read_window(float(T_OFFSET), T_OFFSET + 4000)
    with pytest.raises(FileNotFoundError, match="nowhere.h5"):
        DsecEventReader(path.parent / "nowhere.h5")


@pytest.mark.parametrize(
    "edit, exc, match",
    [
        (lambda f: f.__delitem__("events/p"), KeyError, "missing dataset /events/p"),
        (lambda f: f.__delitem__("ms_to_idx"), KeyError, "missing dataset /ms_to_idx"),
        (lambda f: f.__delitem__("t_offset"), KeyError, "missing dataset /t_offset"),
        (
            lambda f: (
                f.__delitem__("events/t"),
                f.create_dataset("events/t", data=np.zeros(50, np.float32)),
            ),
            TypeError,
            "/events/t must be a 1-D integer array",
        ),
        (
            lambda f: (f.__delitem__("events/x"), f.create_dataset("events/x", data=np.zeros(3, np.uint16))),
            ValueError,
            "event arrays differ in length",
        ),
        (
            lambda f: (f.__delitem__("t_offset"), f.create_dataset("t_offset", data=np.zeros(3, np.int64))),
            TypeError,
            "/t_offset must be an integer scalar or shape",
        ),
    ],
)
def test_bad_files_raise_naming_file(tmp_path, edit, exc, match):
    ev = random_events(n=50, duration_us=5000, seed=2)
    path = write_file(tmp_path / "bad.h5", ev, 5000, batches=1, chunk=16)
    with h5py.File(path, "a") as f:
        edit(f)
    reader = DsecEventReader(path)  # lazy: nothing checked yet
    with pytest.raises(exc, match=match) as info:
        reader.read_window(T_OFFSET, T_OFFSET + 1000)
    assert str(path) in str(info.value)


def test_writer_rejects_unsorted_batches(tmp_path):
    w = DsecEventWriter(tmp_path / "e.h5")
    w.append(np.zeros(2), np.zeros(2), np.array([10, 20]), np.zeros(2))
    with pytest.raises(ValueError, match="time order"):
        w.append(np.zeros(1), np.zeros(1), np.array([15]), np.zeros(1))
    with pytest.raises(ValueError, match="before the last event"):
        w.close(5)
    w.abort()


def make_sequence(root, n_images=5, t0=1_000_000, period=50_000):
    seq = root / "seq"
    (seq / IMAGES_DIR).mkdir(parents=True)
    (seq / EVENTS_FILE).parent.mkdir(parents=True)
    stamps = t0 + period * np.arange(n_images)
    (seq / TIMESTAMPS_FILE).write_text("".join(f"{s}\n" for s in stamps))
    for i in range(n_images - 1):  # the last image is missing on purpose
        (seq / IMAGES_DIR / IMAGE_NAME.format(i)).write_bytes(b"png")
    ev = random_events(n=300, duration_us=period * (n_images - 1), seed=5)
    write_file(seq / EVENTS_FILE, ev, period * (n_images - 1), t_offset=t0)
    return seq, stamps


def test_sequence_images_and_nearest(tmp_path):
    seq, stamps = make_sequence(tmp_path)
    s = DsecSequence(seq)
    np.testing.assert_array_equal(s.image_timestamps_us, stamps)
    assert s.num_images == 5 and s.image_path(2).name == "000002.png"
    assert s.nearest_image(0) == 0 and s.nearest_image(10**12) == 4
    assert s.nearest_image(int(stamps[1]) + 24_999) == 1 and s.nearest_image(int(stamps[1]) + 25_001) == 2
    assert s.nearest_image(int(stamps[1]) + 25_000) == 1  # tie -> earlier
    with pytest.raises(FileNotFoundError, match="000004.png"):
        s.image_path(4)
    with pytest.raises(IndexError, match="outside"):
        s.image_path(5)
    win = s.events.read_window(int(stamps[0]), int(stamps[2]))
    assert len(win) > 0 and win.t.min() >= stamps[0] and win.t.max() < stamps[2]
    with pytest.raises(FileNotFoundError, match="evalign_synthetic.json"):
        s.synthetic_info()
    (seq / TIMESTAMPS_FILE).write_text("5\n3\n")
    with pytest.raises(ValueError, match="must increase"):
        _ = DsecSequence(seq).image_timestamps_us
    with pytest.raises(FileNotFoundError):
        DsecSequence(tmp_path / "missing")


def _read_in_child(args):
    reader, start, end = args
    win = reader.read_window(start, end)
    return win.t, reader._pid


def test_reader_opened_before_fork_reopens_in_the_child(recording):
    import multiprocessing as mp
    import os

    path, _ = recording
    reader = DsecEventReader(path)
    parent = reader.read_window(T_OFFSET + 10_000, T_OFFSET + 90_000)  # handle open in the parent
    with mp.get_context("fork").Pool(1) as pool:
        t, pid = pool.map(_read_in_child, [(reader, T_OFFSET + 10_000, T_OFFSET + 90_000)])[0]
    assert pid != os.getpid()
    np.testing.assert_array_equal(t, parent.t)
    reader.close()


def test_truncated_events_file_names_path_and_sizes(tmp_path):
    ev = random_events(n=2000, duration_us=20_000, seed=4)
    path = write_file(tmp_path / "events.h5", ev, 20_000, batches=2, chunk=256)
    full = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(full // 2)
    reader = DsecEventReader(path)  # lazy: the damage shows on first read
    with pytest.raises(ValueError, match="is truncated") as info:
        reader.read_window(T_OFFSET, T_OFFSET + 1000)
    msg = str(info.value)
    assert str(path) in msg and f"{full // 2:,}" in msg and f"{full:,}" in msg
    path.write_bytes(b"not hdf5 at all" * 10)
    with pytest.raises(ValueError, match=rf"{path}: not a readable HDF5 events file"):
        _ = DsecEventReader(path).num_events


def test_unsorted_timestamps_report_the_first_bad_index(tmp_path):
    ev = random_events(n=600, duration_us=6000, seed=5)
    path = write_file(tmp_path / "events.h5", ev, 6000, batches=1, chunk=64)
    with h5py.File(path, "a") as f:
        t = f["events/t"][:].astype(np.int64)
        bad = int(np.searchsorted(t, 3500))  # inside ms 3: one event jumps 300 µs ahead of its successors
        t[bad] += 300
        f["events/t"][:] = t
    first = int(np.flatnonzero(np.diff(t) < 0)[0]) + 1  # brute force over the whole file
    assert first == bad + 1
    reader = DsecEventReader(path)
    assert len(reader.read_window(T_OFFSET, T_OFFSET + 2000)) > 0  # windows before the damage still read
    with pytest.raises(ValueError, match=rf"{path}: /events/t is not sorted: t\[{first}\]"):
        reader.read_window(T_OFFSET + 3000, T_OFFSET + 5000)
