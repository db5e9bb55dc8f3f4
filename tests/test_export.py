"""Parquet export + dataset card: load_dataset(export, name=...) equals the builder's as_dataset."""

from __future__ import annotations

import datasets
import pytest
import yaml
from dsec_tree import synthetic_tree

from modeling_evalign.data import export as export_mod
from modeling_evalign.data.dsec_builder import DsecAlignmentBuilder
from modeling_evalign.data.export import export_dsec

KW = dict(val_fraction=0.5, test_fraction=0.0)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return synthetic_tree(tmp_path_factory)


@pytest.fixture(scope="module")
def exported(tree, tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    result = export_dsec(
        tree,
        base / "out",
        ["500ms", "1s"],
        cache_dir=base / "cache",
        max_rows_per_shard=2,
        repo_id="org/dsec-test",
        **KW,
    )
    return base, result


def _plain(table):
    return table.replace_schema_metadata(None)


def test_layout_and_card(exported, tree):
    base, result = exported
    out = base / "out"
    # 3 windows of 1 s per 3 s sequence, 2 rows per shard -> 2 shards; 6 windows of 500 ms -> 3 shards
    assert result.counts == {"500ms": {"train": 6, "validation": 6}, "1s": {"train": 3, "validation": 3}}
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet"))
    assert files == sorted(result.files)
    assert (
        "data/1s/train-00000-of-00002.parquet" in files
        and "data/500ms/validation-00002-of-00003.parquet" in files
    )
    text = (out / "README.md").read_text()
    header = yaml.safe_load(text.split("---")[1])
    assert header["configs"] == [
        {
            "config_name": "500ms",
            "data_files": [
                {"split": "train", "path": "data/500ms/train-*.parquet"},
                {"split": "validation", "path": "data/500ms/validation-*.parquet"},
            ],
        },
        {
            "config_name": "1s",
            "default": True,
            "data_files": [
                {"split": "train", "path": "data/1s/train-*.parquet"},
                {"split": "validation", "path": "data/1s/validation-*.parquet"},
            ],
        },
    ]
    assert header["license"] == "cc-by-sa-4.0"
    assert 'load_dataset("org/dsec-test", name="1s")' in text
    assert "| `1s` | 1000 ms | 3 | 3 |" in text and "| `500ms` | 500 ms | 6 | 6 |" in text
    assert "| `eventgpt_frames` | list of image x 5 |" in text and "| `window_end_us` | int64 |" in text
    assert "nearest to the window's **end**" in text and "default_rng(split_seed)" in text
    assert not [p for p in base.iterdir() if p.name.startswith(".out")]  # no temp folder left
    # synthetic data is named synthetic, with the generator's settings; no machine path in the uploaded card
    import json

    seqs = sorted(p for p in tree.iterdir() if (p / "evalign_synthetic.json").is_file())
    first = json.loads((seqs[0] / "evalign_synthetic.json").read_text())
    assert "synthetic" in header["tags"] and header["pretty_name"].startswith("Synthetic")
    assert "> **Synthetic data.**" in text and f"| sequences | {len(seqs)} x " in text
    assert f"| contrast_threshold | {first['simulator']['contrast_threshold']} |" in text
    assert str(tree) not in text and str(base) not in text and "## Limitations" in text
    with pytest.raises(ValueError, match="machine path"):
        export_dsec(tree, base / "bad", ["1s"], cache_dir=base / "cache", source_description=f"files in {tree}", **KW)


@pytest.mark.parametrize("name", ["500ms", "1s"])
def test_round_trip_load_dataset(exported, tree, name):
    base, _ = exported
    loaded = datasets.load_dataset(str(base / "out"), name=name, cache_dir=str(base / "hf"))
    builder = DsecAlignmentBuilder(config_name=name, data_dir=str(tree), cache_dir=str(base / "cache"), **KW)
    for split in ("train", "validation"):
        ref = builder.as_dataset(split=split)
        assert loaded[split].features == ref.features
        assert _plain(loaded[split].data.table).equals(_plain(ref.data.table))


def test_failed_export_keeps_previous_folder(exported, tree, monkeypatch):
    base, _ = exported
    before = (base / "out" / "README.md").read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("card failed")

    monkeypatch.setattr(export_mod, "_write_card", boom)
    with pytest.raises(RuntimeError, match="card failed"):
        export_dsec(tree, base / "out", ["1s"], cache_dir=base / "cache", **KW)
    assert (base / "out" / "README.md").read_bytes() == before
    assert (base / "out" / "data" / "500ms").is_dir()
    assert not [p for p in base.iterdir() if p.name.startswith(".out")]


def test_shards_by_size(tree, tmp_path):
    res = export_dsec(tree, tmp_path / "o", ["1s"], cache_dir=tmp_path / "c", max_shard_bytes=1, **KW)
    assert sorted(res.files) == [
        f"data/1s/{s}-0000{i}-of-00003.parquet" for s in ("train", "validation") for i in range(3)
    ]  # one row per shard, never an empty shard


def test_export_errors(tree, tmp_path):
    with pytest.raises(ValueError, match="3s"):
        export_dsec(tree, tmp_path / "x", ["3s"])
    with pytest.raises(ValueError, match="no window fits"):
        export_dsec(tree, tmp_path / "x", ["4s"], cache_dir=tmp_path / "c", **KW)
    assert not (tmp_path / "x").exists()
