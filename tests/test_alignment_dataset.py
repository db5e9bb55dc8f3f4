"""AlignmentDataset: directory round trips, memory mapping, splits and every bad-input error."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from modeling_evalign.data.alignment_dataset import AlignmentDataset
from modeling_evalign.data.synthetic_features import make_linear_pairs, write_feature_directory
from modeling_evalign.utils.io_utils import MANIFEST_NAME


def _samples(n, per_seq=4):
    return [{"sequence": f"seq_{i // per_seq}", "window_start_us": (i % per_seq) * 1000} for i in range(n)]


def _write(path: Path, event, target, metadata=None, fmt="safetensors"):
    path.mkdir(parents=True, exist_ok=True)
    for stem, t in (("event_features", event), ("target_features", target)):
        if fmt == "safetensors":
            save_file({"features": t}, str(path / f"{stem}.safetensors"))
        else:
            torch.save(t, path / f"{stem}.pt")
    if metadata is not None:
        (path / "metadata.json").write_text(json.dumps(metadata))
    return path


def test_round_trip_with_metadata_and_subset(tmp_path):
    pairs = make_linear_pairs(12, 5, 7, seed=3)
    ds = AlignmentDataset(pairs.event_features, pairs.target_features, {"samples": _samples(12), "note": "x"})
    out = ds.save_to_directory(tmp_path / "full")
    assert sorted(p.name for p in out.iterdir() if p.name != MANIFEST_NAME) == ["event_features.safetensors", "metadata.json", "target_features.safetensors"]
    back = AlignmentDataset.from_directory(out)
    assert len(back) == 12 and back.event_dim == 5 and back.target_dim == 7
    assert torch.equal(back.event_features, pairs.event_features)
    assert torch.equal(back.target_features, pairs.target_features)
    assert back.samples_list() == _samples(12) and back.metadata["note"] == "x"
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["num_samples"] == 12 and meta["event_shape"] == [5] and meta["target_shape"] == [7]

    sub = back.subset([7, 2, 9])
    item = sub[1]
    assert item["index"] == 1 and torch.equal(item["target_features"], pairs.target_features[2])
    sub_back = AlignmentDataset.from_directory(sub.save_to_directory(tmp_path / "sub"))
    assert torch.equal(sub_back.event_features, pairs.event_features[[7, 2, 9]])
    assert sub_back.metadata_column("sequence") == ["seq_1", "seq_0", "seq_2"]


def test_token_level_half_precision_and_pt_files(tmp_path):
    pairs = make_linear_pairs(6, 4, 3, num_tokens=5, seed=1)
    ev16 = pairs.event_features.to(torch.float16)
    _write(tmp_path / "st", ev16, pairs.target_features)
    ds = AlignmentDataset.from_directory(tmp_path / "st")
    assert ds.event_shape == (5, 4) and ds.target_shape == (5, 3)
    item = ds[-1]
    assert item["event_features"].dtype == torch.float32 and item["index"] == 5
    assert torch.equal(item["event_features"], ev16[5].float())
    # .pt: a bare tensor on one side, a {"features": ...} dict on the other
    d = tmp_path / "pt"
    d.mkdir()
    torch.save(pairs.event_features, d / "event_features.pt")
    torch.save({"features": pairs.target_features, "note": "ok"}, d / "target_features.pt")
    ds = AlignmentDataset.from_directory(d)
    assert torch.equal(ds.target_features, pairs.target_features) and torch.equal(ds[2]["event_features"], pairs.event_features[2])


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc/self/maps")
def test_safetensors_are_memory_mapped(tmp_path):
    pairs = make_linear_pairs(8, 4, 4)
    ds = AlignmentDataset.from_directory(_write(tmp_path, pairs.event_features, pairs.target_features))
    maps = Path("/proc/self/maps").read_text()
    assert str((tmp_path / "event_features.safetensors").resolve()) in maps
    assert torch.equal(ds.event_features, pairs.event_features)
    # copy-on-write: writing to the loaded tensor never touches the file
    ds._event[0, 0] = 123.0
    assert torch.equal(AlignmentDataset.from_directory(tmp_path).event_features, pairs.event_features)
    assert str((tmp_path / "event_features.safetensors").resolve()) not in _maps_without_mmap(tmp_path)


def _maps_without_mmap(tmp_path):
    pairs = make_linear_pairs(8, 4, 4)
    d = _write(tmp_path / "eager", pairs.event_features, pairs.target_features)
    AlignmentDataset.from_directory(d, mmap=False)
    return "\n".join(line for line in Path("/proc/self/maps").read_text().splitlines() if "eager" in line)


def test_single_tensor_under_any_key_accepted(tmp_path):
    save_file({"emb": torch.ones(3, 2)}, str(tmp_path / "event_features.safetensors"))
    save_file({"features": torch.zeros(3, 2), "other": torch.zeros(1)}, str(tmp_path / "target_features.safetensors"))
    ds = AlignmentDataset.from_directory(tmp_path)
    assert torch.equal(ds.event_features, torch.ones(3, 2))


class Foreign:  # any class outside torch's weights_only allow-list
    def __init__(self):
        self.features = torch.zeros(2, 2)


def test_pt_needing_foreign_class_is_refused(tmp_path):
    torch.save({"features": torch.zeros(2, 3), "cfg": Foreign()}, tmp_path / "event_features.pt")
    torch.save(torch.zeros(2, 3), tmp_path / "target_features.pt")
    with pytest.raises(ValueError, match=r"event_features\.pt: refused to load"):
        AlignmentDataset.from_directory(tmp_path)


@pytest.mark.parametrize(
    ("event", "target", "metadata", "exc", "match"),
    [
        (torch.zeros(4, 3), torch.zeros(5, 3), None, ValueError, r"event_features\.safetensors has 4 rows .* 5"),
        (torch.zeros(4, 3), torch.zeros(4, 3), {"event_dim": 8}, ValueError, r"metadata\.json.*event_dim=8.*3"),
        (torch.zeros(4, 3), torch.zeros(4, 3), {"samples": [{}] * 3}, ValueError, r"metadata\.json.*3 entries.*4"),
        (torch.zeros(4, 2, 3), torch.zeros(4, 3), {"event_shape": [3]}, ValueError, r"event_shape=\[3\].*\[2, 3\]"),
        (torch.zeros(4), torch.zeros(4, 3), None, ValueError, r"event_features\.safetensors has shape \(4,\)"),
        (torch.zeros(4, 3, 2, 2), torch.zeros(4, 3), None, ValueError, r"expected \[N, D\] or \[N, T, D\]"),
        (torch.zeros(4, 3, dtype=torch.int64), torch.zeros(4, 3), None, TypeError, "floating point"),
    ],
)
def test_bad_directories_raise(tmp_path, event, target, metadata, exc, match):
    _write(tmp_path, event, target, metadata)
    with pytest.raises(exc, match=match):
        AlignmentDataset.from_directory(tmp_path)


def test_nan_and_inf_name_file_and_first_row(tmp_path):
    target = torch.zeros(6, 2, 3)
    target[4, 1, 2] = float("nan")
    target[5, 0, 0] = float("inf")
    _write(tmp_path, torch.zeros(6, 3), target)
    with pytest.raises(ValueError, match=r"target_features\.safetensors contains NaN or inf: first bad row 4"):
        AlignmentDataset.from_directory(tmp_path)
    assert len(AlignmentDataset.from_directory(tmp_path, validate=False)) == 6
    with pytest.raises(ValueError, match="event_features contains NaN or inf: first bad row 0"):
        AlignmentDataset(torch.full((2, 2), float("-inf")), torch.zeros(2, 2))


def test_nan_check_streams_in_blocks(tmp_path, monkeypatch):
    import modeling_evalign.data.alignment_dataset as mod

    monkeypatch.setattr(mod, "_CHECK_BLOCK_ELEMENTS", 6)  # 2 rows of 3 per block
    ev = torch.zeros(9, 3)
    ev[7, 1] = float("nan")
    with pytest.raises(ValueError, match="first bad row 7"):
        AlignmentDataset(ev, torch.zeros(9, 3))


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        AlignmentDataset.from_directory(tmp_path / "nope")
    save_file({"features": torch.zeros(2, 2)}, str(tmp_path / "event_features.safetensors"))
    with pytest.raises(FileNotFoundError, match=r"target_features\.safetensors or target_features\.pt"):
        AlignmentDataset.from_directory(tmp_path)
    (tmp_path / "target_features.safetensors").write_bytes(struct.pack("<Q", 5) + b"{oops")
    with pytest.raises(ValueError, match=r"target_features\.safetensors: not a readable safetensors file"):
        AlignmentDataset.from_directory(tmp_path)
    save_file({"a": torch.zeros(2, 2), "b": torch.zeros(2, 2)}, str(tmp_path / "target_features.safetensors"))
    with pytest.raises(KeyError, match=r"one tensor or a tensor named 'features'"):
        AlignmentDataset.from_directory(tmp_path)
    save_file({"features": torch.zeros(2, 2)}, str(tmp_path / "target_features.safetensors"))
    (tmp_path / "metadata.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"metadata\.json: invalid JSON"):
        AlignmentDataset.from_directory(tmp_path)


def test_getitem_and_constructor_errors():
    ds = AlignmentDataset(np.zeros((3, 2), np.float32), torch.zeros(3, 4))
    with pytest.raises(IndexError, match="index 3 out of range"):
        ds[3]
    with pytest.raises(TypeError, match="must be an int"):
        ds["0"]
    with pytest.raises(TypeError, match="torch tensor or numpy array"):
        AlignmentDataset([[0.0]], torch.zeros(1, 1))
    with pytest.raises(KeyError, match="no per-sample metadata"):
        ds.metadata_column("sequence")


def test_random_split_is_a_disjoint_seeded_partition():
    pairs = make_linear_pairs(20, 3, 3)
    ds = AlignmentDataset(pairs.event_features, pairs.target_features)
    train, val = ds.split(0.25, seed=1)
    rows = lambda d: {tuple(r.tolist()) for r in d.event_features}  # noqa: E731
    assert len(val) == 5 and len(train) == 15 and not rows(train) & rows(val)
    assert rows(train) | rows(val) == rows(ds)
    assert torch.equal(ds.split(0.25, seed=1)[1].event_features, val.event_features)
    assert not torch.equal(ds.split(0.25, seed=2)[1].event_features, val.event_features)
    with pytest.raises(ValueError, match="val_fraction"):
        ds.split(1.0)
    with pytest.raises(ValueError, match="empty"):
        ds.split(0.01)


def test_group_split_keeps_sequences_whole():
    pairs = make_linear_pairs(24, 3, 3)
    ds = AlignmentDataset(pairs.event_features, pairs.target_features, _samples(24, per_seq=4))
    train, val = ds.split(0.3, seed=0, group_by="sequence")
    tr, va = set(train.metadata_column("sequence")), set(val.metadata_column("sequence"))
    assert not tr & va and len(tr | va) == 6
    assert len(val) >= 0.3 * 24 and len(val) % 4 == 0
    with pytest.raises(ValueError, match="at least 2"):
        AlignmentDataset(pairs.event_features[:4], pairs.target_features[:4], _samples(4)).split(0.5, group_by="sequence")


def test_write_feature_directory_metadata(tmp_path):
    path = write_feature_directory(tmp_path / "syn", 10, 4, 6, noise=0.0, seed=5, num_sequences=3)
    ds = AlignmentDataset.from_directory(path)
    pairs = make_linear_pairs(10, 4, 6, noise=0.0, seed=5)
    assert torch.allclose(ds.target_features, ds.event_features @ pairs.weight, atol=1e-5)
    assert ds.metadata_column("sequence") == ["synthetic_00"] * 4 + ["synthetic_01"] * 4 + ["synthetic_02"] * 2
    assert ds.samples_list()[5]["window_start_us"] == 1_000_000
    with pytest.raises(ValueError, match="num_sequences"):
        write_feature_directory(tmp_path / "bad", 3, 2, 2, num_sequences=4)
    assert not (tmp_path / "bad").exists()


def test_legacy_pt_and_bfloat16_safetensors(tmp_path):
    ev = torch.randn(4, 3)
    # legacy (non-zip) torch format cannot be memory-mapped: read without mmap, still weights_only
    torch.save({"features": ev}, tmp_path / "event_features.pt", _use_new_zipfile_serialization=False)
    tg = torch.randn(4, 2).to(torch.bfloat16)  # no numpy bf16: read through safetensors instead of np.memmap
    save_file({"features": tg}, str(tmp_path / "target_features.safetensors"))
    ds = AlignmentDataset.from_directory(tmp_path)
    assert torch.equal(ds.event_features, ev) and ds.target_features.dtype == torch.bfloat16
    assert torch.equal(ds[1]["target_features"], tg[1].float())


def test_truncated_safetensors_named_with_promised_and_present_sizes(tmp_path):
    d = tmp_path / "features" / "train"
    _write(d, torch.randn(40, 2048), torch.randn(40, 16))  # 40 x 2048 float32 = 327,680 bytes of data
    path = d / "event_features.safetensors"
    header = 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]
    with open(path, "r+b") as f:
        f.truncate(header + 163_840)
    with pytest.raises(ValueError) as info:
        AlignmentDataset.from_directory(d)
    assert str(info.value) == (
        f"{path} is truncated: header promises 327,680 bytes of data, file has 163,840"
    )
    with open(path, "r+b") as f:  # cut inside the JSON header itself
        f.truncate(20)
    with pytest.raises(ValueError, match=r"is truncated: its header promises a [\d,]+-byte header, file has 20"):
        AlignmentDataset.from_directory(d)


def test_truncated_pt_features_are_named(tmp_path):
    torch.save(torch.randn(64, 32), tmp_path / "event_features.pt")
    torch.save(torch.randn(64, 8), tmp_path / "target_features.pt")
    assert len(AlignmentDataset.from_directory(tmp_path)) == 64  # the brief's features/*.pt layout reads
    path = tmp_path / "event_features.pt"
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(ValueError, match=rf"{path}: not a readable torch file \(truncated or corrupt"):
        AlignmentDataset.from_directory(tmp_path)
