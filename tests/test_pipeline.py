"""The main job end to end on a tiny tree: stages chain, the table matches results.json, a rerun reuses work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from modeling_evalign.data.alignment_dataset import AlignmentDataset
from modeling_evalign.evaluation.metrics import bidirectional_recall
from modeling_evalign.pipeline.job import COLUMNS, PipelineConfig, format_table, main, run_pipeline
from modeling_evalign.pipeline.report import evaluate_features

FIRENET = Path(__file__).resolve().parents[2] / "shared" / "weights" / "firenet" / "model.pth"


# a proxy tower of a few seconds (the default one takes minutes)
TINY_PROXY = dict(photos=["astronaut", "coffee"], image_size=32, patch_size=16, hidden_size=32, intermediate_size=64,
                  vision_layers=1, text_layers=1, num_heads=2, projection_dim=16, train_sequences_per_photo=1,
                  test_sequences_per_photo=1, frames_per_sequence=4, render_size=(42, 32), steps=4, batch_size=4,
                  warmup_steps=1, checkpoint_every=4)


def _config(out: Path, **kw) -> PipelineConfig:
    # 6 sequences alternating two photographs: 4 train (both classes, for triple_modal), 1 validation, 1 test
    base = dict(output_dir=str(out), sequences=6, seconds=2.2, sensor_size=(64, 48), image_size=(96, 72),
                val_fraction=0.17, test_fraction=0.17,
                photos=["astronaut", "coffee"], durations=["1s"], num_epochs=2, batch_size=4, image_epochs=1,
                image_batch_size=4, proxy_clip=TINY_PROXY, proxy_cache_dir=str(out.parent / "towers"),
                firenet=str(FIRENET) if FIRENET.is_file() else None,
                downstream=False)  # the VLM stage has its own end-to-end test (test_downstream.py)
    base.update(kw)
    return PipelineConfig(**base)


@pytest.mark.slow
def test_pipeline_end_to_end_and_resume(tmp_path, capsys):
    cfg = _config(tmp_path / "demo")
    rows = run_pipeline(cfg)
    strategies = [r.strategy for r in rows]
    expected = (["unaligned", "closed_form", "lightweight", "contrastive", "triple_modal", "contrastive_image"]
                + (["reconstruction"] if FIRENET.is_file() else []) + ["rgb_reference", "rgb_reference/embed"])
    assert strategies == expected
    feats = tmp_path / "demo" / "features" / "1s"
    train, test = AlignmentDataset.from_directory(feats / "train"), AlignmentDataset.from_directory(feats / "test")
    for r in rows:
        assert set(COLUMNS) <= set(r.metrics)
        assert r.metrics["n_test"] == len(test)
        assert all(0.0 <= r.metrics[c] <= 1.0 for c in COLUMNS if "R@" in c)
    triple = next(r for r in rows if r.strategy == "triple_modal").metrics
    assert triple["zero_shot/chance"] == pytest.approx(0.5) and 0.0 <= triple["zero_shot/accuracy"] <= 1.0

    # targets, recomputed here from the PNG nearest each window's end: the token space holds the penultimate
    # layer's patch tokens (CLS dropped) as [N, P, D], the embedding space the tower's image_embeds
    from transformers import CLIPVisionModelWithProjection

    from modeling_evalign.features.clip_preprocessing import clip_preprocess
    from modeling_evalign.features.proxy_clip import ProxyClipConfig, proxy_clip_dir
    from modeling_evalign.pipeline.features import rgb_start_features

    tower_dir = proxy_clip_dir(ProxyClipConfig(**TINY_PROXY), tmp_path / "towers")
    tower = CLIPVisionModelWithProjection.from_pretrained(tower_dir).eval()
    first = test.samples_list()[0]
    seq = tmp_path / "demo" / "dsec" / first["sequence"]
    ts = np.loadtxt(seq / "images" / "timestamps.txt", dtype=np.int64)

    def encode(t_us):  # (patch tokens flattened, image_embeds) of the PNG nearest t_us
        from PIL import Image

        k = int(np.argmin(np.abs(ts - t_us)))
        image = np.asarray(Image.open(seq / "images" / "left" / "rectified" / f"{k:06d}.png").convert("RGB"))
        with torch.no_grad():
            out = tower(pixel_values=clip_preprocess([image], tower.config.image_size), output_hidden_states=True)
        return out.hidden_states[-2][0, 1:], out.image_embeds[0]

    tokens, embeds = encode(first["window_end_us"])
    embed_test = AlignmentDataset.from_directory(feats / "embed" / "test")
    assert torch.allclose(test.target_features[0].float(), tokens, atol=1e-4)
    assert torch.allclose(embed_test.target_features[0].float(), embeds, atol=1e-4)
    assert torch.equal(embed_test.event_features, test.event_features.flatten(1))
    groups = test.metadata_column("sequence")
    for name in ("rgb_reference/embed",):  # against the embedding targets
        r = next(r for r in rows if r.strategy == name)
        assert "embedding space" in r.note

    # rgb_reference: the START frame as the query
    queries = rgb_start_features(cfg, tmp_path / "demo" / "dsec", test, tower)
    assert torch.allclose(queries[0], encode(first["window_start_us"])[0].flatten(), atol=1e-4)
    got_ref = next(r for r in rows if r.strategy == "rgb_reference").metrics
    assert got_ref == pytest.approx(evaluate_features(queries, test.target_features.float().flatten(1), groups))
    queries = rgb_start_features(cfg, tmp_path / "demo" / "dsec", test, tower, space="embed")
    assert torch.allclose(queries[0], encode(first["window_start_us"])[1], atol=1e-4)

    # the closed-form row against an independent float64 ridge solve (numpy) on the same features, one map
    # shared by every patch token (rows = windows x patches), compared flattened
    d = train.event_dim
    x, y = train.event_features.double().numpy().reshape(-1, d), train.target_features.double().numpy().reshape(-1, d)
    xc, yc = x - x.mean(0), y - y.mean(0)
    w = np.linalg.solve(xc.T @ xc + cfg.ridge * np.eye(d), xc.T @ yc)
    pred = (test.event_features.double().numpy() - x.mean(0)) @ w + y.mean(0)
    ref = bidirectional_recall(torch.from_numpy(pred.reshape(len(test), -1)).float(),
                               test.target_features.float().flatten(1))
    got = next(r for r in rows if r.strategy == "closed_form").metrics
    for key in ("e2t/R@1", "e2t/R@5", "t2e/R@1"):
        assert got[key] == pytest.approx(ref[key])
    unaligned = next(r for r in rows if r.strategy == "unaligned").metrics
    assert unaligned["mse"] == pytest.approx(
        float(((test.event_features.double() - test.target_features.double()) ** 2).mean()), rel=1e-5)

    # every trained checkpoint carries validation metrics by the README's rule (tokens flattened), recomputed here,
    # and the row's held-out metrics as test_metrics
    from transformers import AutoModel

    val = AlignmentDataset.from_directory(feats / "validation")
    for name in ("lightweight", "contrastive", "triple_modal"):
        final = tmp_path / "demo" / "runs" / "1s" / name / "final"
        info = json.loads((final / "training_info.json").read_text())
        model = AutoModel.from_pretrained(final).eval()
        with torch.no_grad():
            aligned = model(event_features=val.event_features.float()).aligned_features.float().flatten(1)
        want = bidirectional_recall(aligned, val.target_features.float().flatten(1))
        for key in ("e2t/R@1", "t2e/R@1", "mean/R@5"):
            assert info["final_metrics"][key] == pytest.approx(want[key]), (name, key)
        row = next(r for r in rows if r.strategy == name).metrics
        assert info["test_metrics"]["mean/R@1"] == row["mean/R@1"]

    # printed table == results.md == the rows in results.json
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert [r["strategy"] for r in saved["rows"]] == strategies
    assert all(r["metrics"]["n_test"] == len(test) for r in saved["rows"])
    table = format_table(rows)
    md = (tmp_path / "demo" / "results.md").read_text()
    assert md.split("## Table\n", 1)[1].strip() == table and "![summary.png](summary.png)" in md
    assert table in capsys.readouterr().out

    # a second run reuses every finished stage (no retraining: the final checkpoints are untouched)
    final = tmp_path / "demo" / "runs" / "1s" / "lightweight" / "final" / "model.safetensors"
    before = final.stat().st_mtime_ns
    again = run_pipeline(cfg)
    assert final.stat().st_mtime_ns == before
    assert [r.metrics for r in again] == [r.metrics for r in rows]


def test_pipeline_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="sequences"):
        _config(tmp_path, sequences=2)
    with pytest.raises(ValueError, match="seconds"):
        _config(tmp_path, seconds=0)
    with pytest.raises(ValueError, match="strategies"):
        _config(tmp_path, strategies=["closed_form", "magic"])
    with pytest.raises(SystemExit) as err:
        main(["--sensor-size", "640by480"])
    assert err.value.code == 2


def test_presets_and_flags():
    from modeling_evalign.pipeline.config import parse_args

    large = parse_args(["--preset", "large"])
    assert large.sequences * large.seconds / 0.2 >= 5_500 and large.sequences * large.seconds >= 1_100
    assert parse_args(["--preset", "large", "--sequences", "5"]).sequences == 5
    cfg = parse_args(["--clip", "openai/clip-vit-large-patch14-336", "--proxy-steps", "7"])
    assert cfg.clip == "openai/clip-vit-large-patch14-336" and cfg.proxy_clip == {"steps": 7}
