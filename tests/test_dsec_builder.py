"""DsecAlignmentBuilder on a tiny synthetic DSEC tree: window rule, pairing, splits, determinism, num_proc."""

from __future__ import annotations

import io

import numpy as np
import pytest
from dsec_tree import raw_sequence, synthetic_tree

from modeling_evalign.data.dsec_builder import DsecAlignmentBuilder
from modeling_evalign.data.windows import DURATIONS_US, assign_splits, nearest_frame_index, window_bounds
from modeling_evalign.events.dsec_reader import DsecEventReader
from modeling_evalign.events.representations import event_histogram_image, eventgpt_frames, voxel_grid
from modeling_evalign.events.scenes import PHOTOS

TWO_SPLITS = dict(val_fraction=0.5, test_fraction=0.0)  # 2 sequences: one train, one validation


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return synthetic_tree(tmp_path_factory)


def _prepare(tree, cache, duration, num_proc=None, **kw):
    builder = DsecAlignmentBuilder(config_name=duration, data_dir=str(tree), cache_dir=str(cache), **kw)
    builder.download_and_prepare(num_proc=num_proc)
    return builder


def _expected_windows(seq_dir, window_us):
    """[start, end) of each window, from the raw file and timestamps.txt with plain integer arithmetic."""
    raw = raw_sequence(seq_dir)
    t = raw["events"]["t"]
    rec_start = raw["t_offset"]
    rec_end = raw["t_offset"] + max(int(t[-1]) + 1, (raw["n_ms"] - 1) * 1000)
    start, end = max(rec_start, raw["timestamps"][0]), min(rec_end, raw["timestamps"][-1])
    out, s = [], start
    while s + window_us <= end:
        out.append((s, s + window_us))
        s += window_us
    return out


def test_eight_configs_with_versions():
    names = [c.name for c in DsecAlignmentBuilder.BUILDER_CONFIGS]
    assert names == ["200ms", "500ms", "1s", "2s", "4s", "5s", "10s", "20s"]
    for c in DsecAlignmentBuilder.BUILDER_CONFIGS:
        assert str(c.version) == "1.0.0" and c.window_us == DURATIONS_US[c.name]
        assert c.representations == ("eventgpt_frames",)


@pytest.mark.parametrize("duration", ["200ms", "1s", "2s", "4s"])
def test_window_counts_and_bounds_follow_the_rule(tree, tmp_path, duration):
    builder = _prepare(tree, tmp_path, duration, val_fraction=0.0, test_fraction=0.0)
    seqs = sorted(p for p in tree.iterdir() if p.is_dir())
    expected = [(p.name, s, e) for p in seqs for s, e in _expected_windows(p, DURATIONS_US[duration])]
    assert builder.info.splits["train"].num_examples == len(expected)
    if not expected:  # 3 s recordings hold no 4 s window; datasets cannot open an empty split
        return
    ds = builder.as_dataset(split="train")
    got = list(zip(ds["sequence"], ds["window_start_us"], ds["window_end_us"]))
    assert got == expected  # counts, bounds and order (sequence, then time)
    assert len(expected) == (0 if duration == "4s" else 2 * (3_000_000 // DURATIONS_US[duration]))


def test_examples_equal_reader_windows_and_nearest_frames(tree, tmp_path):
    reps = ("eventgpt_frames", "voxel_grid", "event_histogram")
    builder = _prepare(tree, tmp_path, "1s", representations=reps, num_frames=4, num_bins=3, **TWO_SPLITS)
    from PIL import Image

    seen = set()
    for split in ("train", "validation"):
        ds = builder.as_dataset(split=split).cast_column("rgb", __import__("datasets").Image(decode=False))
        for ex in ds:
            seq_dir = tree / ex["sequence"]
            raw = raw_sequence(seq_dir)
            t0, t1 = ex["window_start_us"], ex["window_end_us"]
            t_img = raw["events"]["t"].astype(np.int64) + raw["t_offset"]
            mask = (t_img >= t0) & (t_img < t1)  # brute force on the raw arrays
            x, y, p = (raw["events"][k][mask] for k in "xyp")
            assert ex["event_count"] == int(mask.sum()) > 0
            window = DsecEventReader(seq_dir).read_window(t0, t1)
            np.testing.assert_array_equal(window.t, t_img[mask])
            ref = eventgpt_frames(x, y, t_img[mask], p, 48, 64, num_frames=4)
            got = np.stack([np.asarray(im) for im in ex["eventgpt_frames"]])
            np.testing.assert_array_equal(got, ref)
            np.testing.assert_array_equal(
                np.asarray(ex["voxel_grid"], np.float32), voxel_grid(x, y, t_img[mask], p, 3, 48, 64)
            )
            np.testing.assert_array_equal(
                np.asarray(ex["event_histogram"], np.float32),
                event_histogram_image(x, y, t_img[mask], p, 48, 64),
            )
            ts = np.asarray(raw["timestamps"])
            nearest = min(range(len(ts)), key=lambda i: (abs(ts[i] - t1), i))  # ties -> earlier frame
            assert ex["rgb_index"] == nearest and ex["rgb_timestamp_us"] == ts[nearest]
            png = seq_dir / f"images/left/rectified/{nearest:06d}.png"
            assert ex["rgb"]["bytes"] == png.read_bytes()
            assert Image.open(io.BytesIO(ex["rgb"]["bytes"])).size == (96, 72)
            assert ex["scene"] == seq_dir.name.split("_", 2)[2]  # synthetic_000_<scene>
            assert ex["label"] == PHOTOS[ex["scene"]]
            seen.add((split, ex["sequence"]))
    # no split leakage: each sequence in exactly one split, both splits used
    assert len({seq for _, seq in seen}) == len(seen) == 2


def test_same_bytes_twice_and_num_proc(tree, tmp_path):
    kw = dict(val_fraction=0.0, test_fraction=0.0)  # both sequences in train: 2 shards for 2 jobs
    a = _prepare(tree, tmp_path / "a", "500ms", **kw).as_dataset(split="train")
    b = _prepare(tree, tmp_path / "b", "500ms", **kw).as_dataset(split="train")
    c_builder = _prepare(tree, tmp_path / "c", "500ms", num_proc=2, **kw)
    c = c_builder.as_dataset(split="train")
    assert len(c_builder.info.splits["train"].shard_lengths or []) == 2  # really written by two jobs
    assert len(a) == 12
    assert a.data.table.equals(b.data.table)
    assert a.data.table.equals(c.data.table)


def test_split_rule():
    names = [f"seq_{i:02d}" for i in range(10)]
    a = assign_splits(names, 0.2, 0.1, seed=5)
    assert a == assign_splits(list(reversed(names)), 0.2, 0.1, seed=5)  # order of listing is irrelevant
    assert sorted(a.values()).count("validation") == 2 and list(a.values()).count("test") == 1
    assert a != assign_splits(names, 0.2, 0.1, seed=6)
    order = np.random.default_rng(5).permutation(10)  # the documented rule, spelled out
    assert [a[names[i]] for i in order] == ["test"] + ["validation"] * 2 + ["train"] * 7
    with pytest.raises(ValueError, match="train split"):
        assign_splits(["a", "b"], 0.5, 0.5)
    with pytest.raises(ValueError, match="val_fraction"):
        assign_splits(names, 1.5, 0.0)


def test_stratified_split_keeps_every_scene_in_train():
    # 10 sequences of 4 scenes (3, 3, 2, 2): the plain rule with this seed leaves two scenes out of train
    scenes = ["cat", "astronaut", "coffee", "rocket", "cat", "astronaut", "coffee", "rocket", "cat", "astronaut"]
    names = [f"seq_{i:02d}_{s}" for i, s in enumerate(scenes)]
    groups = dict(zip(names, scenes))
    for seed in range(20):
        a = assign_splits(names, 0.15, 0.25, seed=seed, groups=groups)
        plain = assign_splits(names, 0.15, 0.25, seed=seed)
        assert sorted(a.values()) == sorted(plain.values())  # the same counts: 3 test, 2 validation, 5 train
        assert {groups[n] for n in names if a[n] == "train"} == set(scenes)
        held = [groups[n] for n in names if a[n] == "test"]
        assert len(set(held)) == len(held)  # one scene at a time
        assert a == assign_splits(list(reversed(names)), 0.15, 0.25, seed=seed, groups=groups)
    # more held-out sequences than scenes can spare: still the requested counts
    a = assign_splits(names[:4], 0.0, 0.5, seed=0, groups=dict(list(groups.items())[:4]))
    assert list(a.values()).count("test") == 2
    with pytest.raises(KeyError, match="seq_00_cat"):
        assign_splits(names, 0.1, 0.1, groups={})


def test_sequence_scene_reads_the_photograph_or_strips_the_recording_letter(tmp_path):
    import json

    from modeling_evalign.data.dsec_builder import SYNTHETIC_INFO, sequence_scene

    synthetic = tmp_path / "synthetic_003_rocket"
    synthetic.mkdir()
    (synthetic / SYNTHETIC_INFO).write_text(json.dumps({"scene": "rocket", "label": "rocket"}))
    real_a, real_b, plain = tmp_path / "zurich_city_00_a", tmp_path / "zurich_city_00_b", tmp_path / "thun_00"
    assert sequence_scene(synthetic) == "rocket"
    assert sequence_scene(real_a) == sequence_scene(real_b) == "zurich_city_00"
    assert sequence_scene(plain) == "thun_00"


def test_window_helpers():
    np.testing.assert_array_equal(window_bounds(10, 45, 10), [[10, 20], [20, 30], [30, 40]])
    assert window_bounds(0, 9, 10).shape == (0, 2)
    np.testing.assert_array_equal(nearest_frame_index([0, 10, 20], [4, 5, 6, 25, -3]), [0, 0, 1, 2, 0])


def test_bad_config_and_data_dir(tmp_path, tree):
    with pytest.raises(ValueError, match="not found"):
        DsecAlignmentBuilder(config_name="3s", data_dir=str(tree), cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="representations"):
        DsecAlignmentBuilder(
            config_name="1s", data_dir=str(tree), cache_dir=str(tmp_path), representations=("rgb_frames",)
        )
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        _prepare(missing, tmp_path / "c", "1s")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="events.h5"):
        _prepare(tmp_path / "empty", tmp_path / "c2", "1s")


def test_build_script(tree, tmp_path):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "dataset_scripts" / "build_dsec.py"
    spec = importlib.util.spec_from_file_location("build_dsec_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    counts = module.main(
        [
            "--data-dir",
            str(tree),
            "--durations",
            "1s",
            "2s",
            "--cache-dir",
            str(tmp_path),
            "--val-fraction",
            "0.5",
            "--test-fraction",
            "0",
        ]
    )
    assert counts == {"1s": {"train": 3, "validation": 3}, "2s": {"train": 1, "validation": 1}}
    with pytest.raises(SystemExit):
        module.main(["--data-dir", str(tree), "--durations", "3s"])
