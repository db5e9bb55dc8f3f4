"""run_egpt_dsec_alignment.py, the brief's per-duration job, on a tiny synthetic DSEC tree: HF checkpoints per
duration that AutoModel loads, held-out metrics equal to a float64 recomputation, cached reruns."""

from __future__ import annotations

import json
import os

import pytest
import torch

SENSOR, IMAGE = (64, 48), (96, 72)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Three 2.2 s sequences: the split by sequence gives 2 train and 1 test sequence."""
    from modeling_evalign.events.synthetic_dsec import write_synthetic_dsec

    root = tmp_path_factory.mktemp("dsec3")
    write_synthetic_dsec(root, sequences=3, seconds=2.2, seed=3, image_size=IMAGE, sensor_size=SENSOR, progress=False)
    return root


def _recall_at_1(aligned: torch.Tensor, target: torch.Tensor) -> float:
    """Event -> target R@1 by brute force in float64 (the window itself is the only positive)."""
    a = torch.nn.functional.normalize(aligned.double(), dim=-1)
    t = torch.nn.functional.normalize(target.double(), dim=-1)
    sim = a @ t.T
    hits = [int(sim[i].argmax()) == i for i in range(len(sim))]
    return sum(hits) / len(hits)


@pytest.mark.slow
def test_brief_command_writes_one_checkpoint_per_duration(tree, tmp_path, capsys):
    from transformers import AutoModel

    from modeling_evalign.data.alignment_dataset import AlignmentDataset
    from modeling_evalign.lightweight.modeling_lightweight import LightweightAlignmentModel
    from run_egpt_dsec_alignment import main

    out = tmp_path / "O"
    argv = ["--durations", "200ms", "1s", "--strategy", "lightweight", "--num_epochs", "2", "--batch_size", "8",
            "--dsec_data_dir", str(tree), "--output_dir", str(out), "--event_model", "tiny"]  # tiny: no proxy build
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for duration in ("200ms", "1s"):
        dest = out / f"alignment_{duration}"
        model = AutoModel.from_pretrained(dest)
        assert isinstance(model, LightweightAlignmentModel)
        info = json.loads((dest / "training_info.json").read_text())
        result = json.loads((dest / "results.json").read_text())
        assert info["durations"] == [duration] and info["num_epochs"] == 2 and result["duration"] == duration
        assert (dest / "README.md").is_file() and "split: test" in (dest / "README.md").read_text()
        train = AlignmentDataset.from_directory(dest / "features" / "train")
        test = AlignmentDataset.from_directory(dest / "features" / "test")
        # held out by sequence: no test window comes from a training sequence
        assert not set(train.metadata_column("sequence")) & set(test.metadata_column("sequence"))
        assert result["counts"] == {"train": len(train), "test": len(test)}
        with torch.no_grad():
            aligned = model(event_features=test.event_features).aligned_features
        assert result["metrics"]["e2t/R@1"] == pytest.approx(_recall_at_1(aligned, test.target_features))
        cos = torch.nn.functional.cosine_similarity(aligned.double(), test.target_features.double(), dim=-1).mean()
        assert result["metrics"]["cosine"] == pytest.approx(float(cos), abs=1e-5)
        assert info["test_metrics"] == result["metrics"]
        assert result["output_dir"] == dest.name  # relative: the checkpoint's files name no machine path
        from modeling_evalign.hub.paths import find_machine_paths
        for name in ("results.json", "training_info.json", "config.json", "README.md"):
            assert not find_machine_paths((dest / name).read_text()), name
        row = next(line for line in printed.splitlines() if line.startswith(f"| {duration} | lightweight |"))
        assert f"| {len(train)} | 0 | {len(test)} | {100 * result['metrics']['e2t/R@1']:.1f} |" in row
    assert len(AlignmentDataset.from_directory(out / "alignment_200ms" / "features" / "test")) > len(test)

    # the same command again: every duration is reused, nothing is retrained
    weights = out / "alignment_1s" / "model.safetensors"
    stamp = os.stat(weights).st_mtime_ns
    assert main(argv) == 0
    assert "finished earlier" in capsys.readouterr().out and os.stat(weights).st_mtime_ns == stamp
    # a duration longer than the sequences is skipped with its reason; the others still run (here: cached)
    assert main([*argv[:1], "1s", "5s", *argv[3:]]) == 0
    summary = json.loads((out / "results.json").read_text())
    assert [r["duration"] for r in summary["results"]] == ["1s"] and "needs at least 3 sequences" in summary["skipped"]["5s"]
    # other settings into the same output directory are refused, naming the setting
    with pytest.raises(ValueError, match=r"other settings \(train\.num_epochs\)"):
        main([*argv[:6], "3", *argv[7:]])


def test_train_dir_keeps_train_accelerate_behaviour(tmp_path):
    """``--train_dir features/{duration}/train``: one training run per duration on existing feature directories."""
    from safetensors.torch import load_file

    from modeling_evalign.data.synthetic_features import write_feature_directory
    from run_egpt_dsec_alignment import main

    for i, duration in enumerate(("200ms", "1s")):
        write_feature_directory(tmp_path / "features" / duration / "train", 24, 6, 5, seed=i)
    argv = ["--train_dir", str(tmp_path / "features" / "{duration}" / "train"), "--durations", "200ms", "1s",
            "--strategy", "lightweight", "--num_epochs", "1", "--batch_size", "4", "--output_dir", str(tmp_path / "o")]
    assert main(argv) == 0
    for duration in ("200ms", "1s"):
        info = json.loads((tmp_path / "o" / duration / "final" / "training_info.json").read_text())
        assert info["data"]["train_dir"].endswith(f"{duration}/train") and info["durations"] == [duration]
        assert set(load_file(str(tmp_path / "o" / duration / "final" / "model.safetensors"))) == {"proj.weight",
                                                                                                  "proj.bias"}
