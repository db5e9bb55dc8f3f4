"""Bad inputs never cost a user's data or give a silent wrong result (issue 18), at the library level:
writers keep a user's files, towers are checked, recordings are validated where read, checkpoints leftovers
and pointers are safe, files honour the umask. The command-line side is in test_cli_errors.py."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from dsec_tree import synthetic_tree

from modeling_evalign.utils.io_utils import atomic_directory, atomic_write_bytes

torch.set_num_threads(1)


# ---- writers: a user's file survives, a foreign directory or a file is refused ------------------------------

def _lightweight():
    from modeling_evalign import LightweightAlignmentConfig, LightweightAlignmentModule

    return LightweightAlignmentModule(LightweightAlignmentConfig(event_dim=4, target_dim=4))


def _features():
    from modeling_evalign.data.alignment_dataset import AlignmentDataset

    return AlignmentDataset(torch.randn(6, 4), torch.randn(6, 4))


def test_strict_writers_refuse_a_foreign_directory_and_a_file(tmp_path):
    from modeling_evalign.data.export import export_dsec

    user = tmp_path / "mine"
    (user / "sub").mkdir(parents=True)
    (user / "notes.txt").write_text("precious")
    (user / "sub" / "script.py").write_text("print(1)")
    a_file = tmp_path / "a_file"
    a_file.write_text("also precious")
    writers = {
        "save_to_directory": lambda out: _features().save_to_directory(out),
        "export_dsec": lambda out: export_dsec(tmp_path, out, ["1s"]),
        "atomic_directory": lambda out: atomic_directory(out).__enter__(),
    }
    for name, write in writers.items():
        with pytest.raises(FileExistsError, match="evalign did not write"):
            write(user)
        with pytest.raises(FileExistsError, match="not a directory"):
            write(a_file)
        assert (user / "notes.txt").read_text() == "precious", name
        assert (user / "sub" / "script.py").read_text() == "print(1)", name
        assert a_file.read_text() == "also precious", name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "mine"]  # nothing moved aside, no temp left


def test_convert_legacy_refuses_a_foreign_directory_before_reading(tmp_path):
    from modeling_evalign.convert_legacy import convert_legacy_checkpoint

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="keep.txt"):
        convert_legacy_checkpoint(tmp_path / "no_such.pt", out)
    assert (out / "keep.txt").read_text() == "x"


def test_rewriting_our_output_keeps_the_files_a_user_added(tmp_path):
    out = tmp_path / "feats"
    _features().save_to_directory(out)
    (out / "my_notes.txt").write_text("mine")
    (out / "plots").mkdir()
    (out / "plots" / "a.png").write_bytes(b"png")
    ds = _features()
    ds.save_to_directory(out)  # replaces what it wrote, keeps the rest
    assert (out / "my_notes.txt").read_text() == "mine" and (out / "plots" / "a.png").read_bytes() == b"png"
    from modeling_evalign.data.alignment_dataset import AlignmentDataset

    assert torch.equal(AlignmentDataset.from_directory(out).event_features, ds.event_features)


def test_save_pretrained_keeps_user_subfolders_and_py_files(tmp_path):
    from transformers import AutoModel

    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "my_tool.py").write_text("x = 1\n")
    (out / "data").mkdir()
    (out / "data" / "table.csv").write_text("a,b\n")
    model = _lightweight()
    model.save_pretrained(out)
    model.save_pretrained(out)  # twice: the second replaces the first's files only
    assert (out / "my_tool.py").read_text() == "x = 1\n"
    assert (out / "data" / "table.csv").read_text() == "a,b\n"
    loaded = AutoModel.from_pretrained(out)
    x = torch.randn(3, 4)
    assert torch.equal(loaded(event_features=x).aligned_features, model(event_features=x).aligned_features)
    with pytest.raises(NotADirectoryError):
        model.save_pretrained(out / "my_tool.py")
    assert (out / "my_tool.py").read_text() == "x = 1\n"


def test_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_bytes(tmp_path / "f.bin", b"x")
        assert path.stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        assert atomic_write_bytes(tmp_path / "g.bin", b"x").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


# ---- towers -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    from transformers import CLIPModel, CLIPVisionModel

    from modeling_evalign.features.tiny_models import tiny_clip_config

    root = tmp_path_factory.mktemp("towers")
    cfg = tiny_clip_config()
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(root / "full")
    CLIPVisionModel(cfg.vision_config).save_pretrained(root / "vision")
    _lightweight().save_pretrained(root / "alignment")
    shutil.copytree(root / "vision", root / "hollow")  # a CLIP config over weights of something else
    from safetensors.torch import save_file

    save_file({"proj.weight": torch.zeros(2, 2)}, str(root / "hollow" / "model.safetensors"))
    return root


def test_tower_loader_accepts_clip_and_refuses_everything_else(towers):
    from transformers import CLIPModel

    from modeling_evalign.features.towers import TowerError, load_clip_vision_tower

    full = load_clip_vision_tower(towers / "full")
    ours = {k.rsplit("embeddings.", 1)[-1]: v for k, v in full.state_dict().items() if "embeddings." in k}
    theirs = {k.rsplit("embeddings.", 1)[-1]: v for k, v in CLIPModel.from_pretrained(towers / "full").state_dict().items()
              if k.startswith("vision_model.embeddings.")}
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert not any(p.requires_grad for p in full.parameters())
    load_clip_vision_tower(towers / "vision")
    load_clip_vision_tower(towers / "full", with_projection=True)
    with pytest.raises(TowerError, match=r"model_type 'evalign_lightweight': expected a CLIP vision tower"):
        load_clip_vision_tower(towers / "alignment", what="--event-model")
    with pytest.raises(TowerError, match="missing weights"):
        load_clip_vision_tower(towers / "hollow")
    with pytest.raises(TowerError, match="no visual_projection"):
        load_clip_vision_tower(towers / "vision", with_projection=True)
    with pytest.raises(FileNotFoundError, match="/nonexistent/tower"):
        load_clip_vision_tower("/nonexistent/tower")


def test_every_tower_loader_goes_through_the_check(towers):
    from modeling_evalign.contrastive.modeling_contrastive_image import (
        load_clip_vision_tower as contrastive_loader,
    )
    from modeling_evalign.features.extraction import load_clip_vision
    from modeling_evalign.features.towers import TowerError
    from modeling_evalign.pipeline.dsec_alignment import load_tower
    from modeling_evalign.pipeline.features import load_vision_tower
    from modeling_evalign.reconstruction.configuration_reconstruction import ReconstructionAlignmentConfig
    from modeling_evalign.reconstruction.modeling_reconstruction import ReconstructionAlignmentModule
    from modeling_evalign.training.data import _clip_vision_model

    def reconstruction(path):  # the frozen tower is loaded on first access
        return ReconstructionAlignmentModule(ReconstructionAlignmentConfig(clip_model_name_or_path=path)).clip_tower

    for load in (load_clip_vision, load_vision_tower, contrastive_loader, load_tower, reconstruction,
                 lambda p: _clip_vision_model(p, None)):
        with pytest.raises(TowerError, match="expected a CLIP vision tower"):
            load(str(towers / "alignment"))


# ---- recordings ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return synthetic_tree(tmp_path_factory)


def _copy_tree(tree: Path, dest: Path) -> tuple[Path, Path]:
    shutil.copytree(tree, dest)
    seqs = sorted(p for p in dest.iterdir() if p.is_dir())
    return dest, seqs[0]


def _rewrite_events(seq: Path, edit) -> None:
    """Rewrite ``events.h5`` (uncompressed) after ``edit(arrays)`` changed the raw arrays in place."""
    import h5py
    import hdf5plugin  # noqa: F401

    path = seq / "events/left/events.h5"
    with h5py.File(path, "r") as f:
        arrays = {k: f[f"events/{k}"][:] for k in "xytp"}
        arrays["ms_to_idx"] = f["ms_to_idx"][:]
        arrays["t_offset"] = f["t_offset"][()]
    edit(arrays)
    path.unlink()
    with h5py.File(path, "w") as f:
        for k in "xytp":
            if k in arrays:
                f[f"events/{k}"] = arrays[k]
        f["ms_to_idx"] = arrays["ms_to_idx"]
        f["t_offset"] = arrays["t_offset"]


def _windows(root, **kw):
    from modeling_evalign.features.dsec_windows import DsecWindows

    return DsecWindows(root, "1s", **kw)


def test_corrupt_ms_to_idx_is_named(tree, tmp_path):
    root, seq = _copy_tree(tree, tmp_path / "t")

    def corrupt(a):
        a["ms_to_idx"][len(a["ms_to_idx"]) // 2] = len(a["t"]) + 10  # one entry past the end

    _rewrite_events(seq, corrupt)
    with pytest.raises(ValueError, match=r"events\.h5: /ms_to_idx.* (decreases|points outside)"):
        _windows(root)

    def shifted(a):  # monotone and in bounds, but not matching t
        a["ms_to_idx"][:] = np.minimum(a["ms_to_idx"] + 7, len(a["t"]))

    root, seq = _copy_tree(tree, tmp_path / "t2")
    _rewrite_events(seq, shifted)
    with pytest.raises(ValueError, match="does not match /events/t"):
        _windows(root)


def test_timestamps_shorter_than_the_pngs_are_named(tree, tmp_path):
    root, seq = _copy_tree(tree, tmp_path / "t")
    ts = seq / "images/timestamps.txt"
    ts.write_text("\n".join(ts.read_text().split()[:-3]) + "\n")
    with pytest.raises(ValueError, match=r"PNGs but timestamps.txt lists"):
        _windows(root)


def test_absurd_t_offset_is_named(tree, tmp_path):
    root, seq = _copy_tree(tree, tmp_path / "t")

    def offset(a):
        a["t_offset"] = np.asarray(a["t_offset"]) + 10**12  # the events now lie days after the images

    _rewrite_events(seq, offset)
    with pytest.raises(ValueError, match=r"no overlap \(is /t_offset"):
        _windows(root)


def test_zero_event_windows_are_skipped_and_reported_unless_kept(tree, tmp_path):
    root, seq = _copy_tree(tree, tmp_path / "t")
    before = len(_windows(root))

    def hole(a):  # no event in raw [1.0 s, 2.3 s): the second 1 s window is empty
        keep = (a["t"] < 1_000_000) | (a["t"] >= 2_300_000)
        for k in "xytp":
            a[k] = a[k][keep]
        a["ms_to_idx"] = np.searchsorted(a["t"], np.arange(len(a["ms_to_idx"])) * 1000).astype(np.uint64)

    _rewrite_events(seq, hole)
    skipped = _windows(root)
    assert len(skipped) == before - 1 and skipped.empty_windows == {seq.name: 1}
    assert all(skipped[i]["event_count"] > 0 for i in range(len(skipped)))
    kept = _windows(root, keep_empty_windows=True)
    assert len(kept) == before and min(kept[i]["event_count"] for i in range(len(kept))) == 0


@pytest.mark.parametrize("field, value, message", [("x", 64, "x\\[.*outside the sensor"), ("p", 7, "p \\(polarity\\)")])
def test_bad_event_values_name_the_file_sequence_and_window(tree, tmp_path, field, value, message):
    root, seq = _copy_tree(tree, tmp_path / "t")

    def bad(a):
        a[field][len(a[field]) // 2] = value

    _rewrite_events(seq, bad)
    windows = _windows(root)
    with pytest.raises(ValueError, match=rf"events\.h5 \(sequence {seq.name}, window \d+ .*{message}"):
        for i in range(len(windows)):
            windows[i]
    # the same file through the datasets builder (which wraps it; the CLI reports the wrapped error)
    import re

    from modeling_evalign.data.dsec_builder import DsecAlignmentBuilder
    from modeling_evalign.utils.cli import user_error

    builder = DsecAlignmentBuilder(config_name="1s", data_dir=str(root), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(Exception) as info:
        builder.download_and_prepare()
    found = user_error(info.value)
    assert found is not None and re.search(rf"events\.h5 \(sequence {seq.name}, window \d+ .*{message}", str(found))


def test_corrupt_png_is_named_at_build_time(tree, tmp_path):
    from modeling_evalign.data.dsec_builder import DsecAlignmentBuilder

    root, seq = _copy_tree(tree, tmp_path / "t")
    for i in (20, 40):  # frames at the ends of 1 s windows
        png = seq / f"images/left/rectified/{i:06d}.png"
        png.write_bytes(png.read_bytes()[:60])
    builder = DsecAlignmentBuilder(config_name="1s", data_dir=str(root), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(Exception) as info:
        builder.download_and_prepare()
    from modeling_evalign.utils.cli import user_error

    found = user_error(info.value)  # datasets wraps it; the CLI reports the wrapped one
    assert found is not None and "0.png" in str(found) and seq.name in str(found), info.value


# ---- checkpoints --------------------------------------------------------------------------------------------

def test_checkpoint_leftovers_are_cleaned_and_the_pointer_cannot_leave_output_dir(tmp_path):
    from modeling_evalign.training import checkpointing as ck

    out = tmp_path / "run"
    outside = tmp_path / "checkpoint-99"
    for d in (out / "checkpoint-3", outside):
        d.mkdir(parents=True)
        (d / ck.STATE_NAME).write_text("{}")
    (out / ".checkpoint-2.deleting").mkdir()
    (out / ".checkpoint-5.partial").mkdir()
    (out / "user_dir").mkdir()
    (out / ck.LATEST_NAME).write_text("../checkpoint-99\n")
    assert ck.find_latest_checkpoint(out) == out / "checkpoint-3"  # the pointer is ignored, the scan used
    (out / ck.LATEST_NAME).write_text(str(outside) + "\n")
    assert ck.find_latest_checkpoint(out) == out / "checkpoint-3"
    removed = ck.clean_leftovers(out)
    assert sorted(p.name for p in removed) == [".checkpoint-2.deleting", ".checkpoint-5.partial"]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-3", ck.LATEST_NAME, "user_dir"]


def test_feature_extraction_keeps_a_users_files_and_refuses_a_file(tmp_path):
    from modeling_evalign.features.extraction import extract_features, tiny_clip_vision

    rng = np.random.default_rng(0)
    rows = [{"eventgpt_frames": [(rng.random((30, 40, 3)) * 255).astype(np.uint8) for _ in range(3)],
             "rgb": (rng.random((36, 48, 3)) * 255).astype(np.uint8), "sequence": "s", "window_start_us": i,
             "window_end_us": i + 1, "scene": None} for i in range(2)]
    out = tmp_path / "feats"
    (out / "plots").mkdir(parents=True)
    (out / "notes.txt").write_text("precious")
    (out / "plots" / "a.png").write_bytes(b"png")
    extract_features(rows, out, tiny_clip_vision(seed=0), progress=False)
    assert (out / "notes.txt").read_text() == "precious" and (out / "plots" / "a.png").read_bytes() == b"png"
    assert (out / "event_features.safetensors").is_file()
    a_file = tmp_path / "a_file"
    a_file.write_text("also precious")
    with pytest.raises((FileExistsError, NotADirectoryError)):
        extract_features(rows, a_file, tiny_clip_vision(seed=0), progress=False)
    assert a_file.read_text() == "also precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "feats"]
