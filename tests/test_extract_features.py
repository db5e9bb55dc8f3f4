"""Feature extraction: CLIP preprocessing, EventGPT pooling, encoders, resumable sharded writer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from modeling_evalign.features.clip_preprocessing import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, clip_preprocess
from modeling_evalign.features.extraction import (
    SHARD_DIR,
    ExtractionOptions,
    extract_features,
    tiny_clip_vision,
)
from modeling_evalign.features.pooling import eventgpt_pool

NUM_FRAMES = 3


def _examples(n: int, seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "eventgpt_frames": [(rng.random((30, 40, 3)) * 255).astype(np.uint8) for _ in range(NUM_FRAMES)],
            "rgb": (rng.random((36, 48, 3)) * 255).astype(np.uint8),
            "sequence": f"seq_{i % 2}",
            "window_start_us": 1000 * i,
            "window_end_us": 1000 * (i + 1),
            "scene": None,
        }
        for i in range(n)
    ]


def test_eventgpt_pool_matches_loops():
    tokens = torch.randn(2, 5, 7, 4, dtype=torch.float64)
    got = eventgpt_pool(tokens)
    assert got.shape == (2, 5 + 7, 4)
    for b in range(2):
        for f in range(5):  # temporal token f = mean over the 7 tokens of frame f
            ref = sum(tokens[b, f, j] for j in range(7)) / 7
            torch.testing.assert_close(got[b, f], ref)
        for j in range(7):  # spatial token j = mean over the 5 frames at position j
            ref = sum(tokens[b, f, j] for f in range(5)) / 5
            torch.testing.assert_close(got[b, 5 + j], ref)
    with pytest.raises(ValueError, match="F, T, D"):
        eventgpt_pool(torch.zeros(3, 4))


def test_clip_preprocess_crop_is_exact_and_resize_close_to_transformers():
    rng = np.random.default_rng(0)
    img = (rng.random((32, 64, 3)) * 255).astype(np.uint8)  # shortest side already 32: crop only
    got = clip_preprocess([img], 32)[0]
    mean, std = np.array(OPENAI_CLIP_MEAN), np.array(OPENAI_CLIP_STD)
    ref = (img[:, 16:48].astype(np.float64) / 255 - mean) / std
    np.testing.assert_allclose(got.permute(1, 2, 0).numpy(), ref, atol=1e-5)

    from skimage.filters import gaussian
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    smooth = (gaussian(rng.random((45, 70, 3)), sigma=3, channel_axis=-1) * 255).astype(np.uint8)
    proc = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    ref = proc(images=[smooth], return_tensors="pt")["pixel_values"]
    got = clip_preprocess([smooth], 32)
    assert got.shape == ref.shape == (1, 3, 32, 32)
    assert (got - ref).abs().mean() < 0.03  # PIL rounds to uint8 after resampling; we do not
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        clip_preprocess([np.zeros((4, 4), np.uint8)], 32)
    with pytest.raises(TypeError, match="uint8"):
        clip_preprocess([np.zeros((4, 4, 3), np.float32)], 32)


def test_features_equal_hand_computation(tmp_path):
    model = tiny_clip_vision(seed=0)
    target_model = tiny_clip_vision(seed=1)
    examples = _examples(3)
    opts = ExtractionOptions(event_pooling="tokens", target_tokens="cls", target_layer=-2)
    res = extract_features(
        examples,
        tmp_path / "f",
        model,
        target_model,
        options=opts,
        batch_size=2,
        shard_size=2,
        split="train",
        progress=False,
    )
    event = load_file(tmp_path / "f" / "event_features.safetensors")["features"]
    target = load_file(tmp_path / "f" / "target_features.safetensors")["features"]
    tokens = 1 + (32 // 8) ** 2
    assert event.shape == (3, NUM_FRAMES + tokens, 64) and target.shape == (3, 64)
    with torch.no_grad():
        for i, ex in enumerate(examples):
            per_frame = torch.stack(
                [
                    model(pixel_values=clip_preprocess([f], 32)).last_hidden_state[0]
                    for f in ex["eventgpt_frames"]
                ]
            ).double()  # [F, T, D]
            temporal = torch.stack([per_frame[f].mean(0) for f in range(NUM_FRAMES)])
            spatial = torch.stack([per_frame[:, j].mean(0) for j in range(tokens)])
            torch.testing.assert_close(
                event[i].double(), torch.cat([temporal, spatial]), atol=1e-5, rtol=1e-5
            )
            hs = target_model(pixel_values=clip_preprocess([ex["rgb"]], 32), output_hidden_states=True)
            torch.testing.assert_close(target[i], hs.hidden_states[-2][0, 0], atol=1e-5, rtol=1e-5)
    meta = json.loads((tmp_path / "f" / "metadata.json").read_text())
    samples = meta["samples"]
    assert [s["sequence"] for s in samples] == ["seq_0", "seq_1", "seq_0"]
    assert [s["split"] for s in samples] == ["train"] * 3
    assert [s["window_end_us"] for s in samples] == [1000, 2000, 3000]
    assert all("scene" not in s for s in samples)  # all None -> left out
    assert meta["event_dim"] == meta["target_dim"] == 64 and res.num_samples == 3
    assert not (tmp_path / "f" / SHARD_DIR).exists()


@pytest.mark.parametrize("target_tokens, shape", [("patch", (16, 64)), ("all", (17, 64)), ("mean", (64,))])
def test_target_token_options(tmp_path, target_tokens, shape):
    model = tiny_clip_vision()
    ex = _examples(1)
    opts = ExtractionOptions(event_pooling="pooled", target_tokens=target_tokens, target_layer=-1)
    res = extract_features(ex, tmp_path, model, options=opts, progress=False)
    assert res.event_shape == [64] and tuple(res.target_shape) == shape
    target = load_file(tmp_path / "target_features.safetensors")["features"][0]
    with torch.no_grad():
        last = model(pixel_values=clip_preprocess([ex[0]["rgb"]], 32)).last_hidden_state[0]
    ref = {"patch": last[1:], "all": last, "mean": last[1:].mean(0)}[target_tokens]
    torch.testing.assert_close(target, ref, atol=1e-5, rtol=1e-5)


def test_resume_after_kill_equals_uninterrupted(tmp_path):
    model = tiny_clip_vision()
    examples = _examples(7)
    kw = dict(batch_size=2, shard_size=2, progress=False)
    full = extract_features(examples, tmp_path / "full", model, **kw)
    assert full.shards_computed == 4

    with pytest.raises(RuntimeError, match="test hook"):
        extract_features(examples, tmp_path / "resumed", model, _fail_after_shards=2, **kw)
    assert not (tmp_path / "resumed" / "metadata.json").exists()  # nothing looks finished
    assert len(list((tmp_path / "resumed" / SHARD_DIR).glob("shard-*.safetensors"))) == 2
    seen = []
    resumed = extract_features(examples, tmp_path / "resumed", model, _on_shard=seen.append, **kw)
    assert (resumed.shards_skipped, resumed.shards_computed, seen) == (2, 2, [2, 3])
    for name in ("event_features.safetensors", "target_features.safetensors"):
        a = load_file(tmp_path / "full" / name)["features"]
        b = load_file(tmp_path / "resumed" / name)["features"]
        assert torch.equal(a, b)
    a_event = load_file(tmp_path / "full" / "event_features.safetensors")["features"]
    again = extract_features(examples, tmp_path / "resumed", model, **kw)  # finished: nothing recomputed
    assert again.shards_computed == 0 and again.num_samples == 7

    from modeling_evalign.data.alignment_dataset import AlignmentDataset

    ds = AlignmentDataset.from_directory(tmp_path / "resumed")  # the agreed format, read by H2's loader
    assert len(ds) == 7 and ds.event_dim == ds.target_dim == 64
    torch.testing.assert_close(ds[3]["event_features"], a_event[3])


def test_bad_inputs(tmp_path):
    model = tiny_clip_vision()
    examples = _examples(4)
    with pytest.raises(RuntimeError):
        extract_features(examples, tmp_path, model, shard_size=1, _fail_after_shards=1, progress=False)
    with pytest.raises(ValueError, match="different settings"):
        extract_features(examples, tmp_path, model, shard_size=2, progress=False)
    with pytest.raises(ValueError, match="event_pooling"):
        ExtractionOptions(event_pooling="max")
    with pytest.raises(KeyError, match="rgb"):
        extract_features([{"eventgpt_frames": []}], tmp_path / "k", model, progress=False)
    with pytest.raises(ValueError, match="0 examples"):
        extract_features([], tmp_path / "e", model, progress=False)
    with pytest.raises(ValueError, match="same number of frames"):
        bad = _examples(2)
        bad[1]["eventgpt_frames"] = bad[1]["eventgpt_frames"][:2]
        extract_features(bad, tmp_path / "b", model, progress=False)


def test_script_on_builder_output(tmp_path_factory, tmp_path):
    import importlib.util
    from pathlib import Path

    from dsec_tree import synthetic_tree

    from modeling_evalign.data.alignment_dataset import AlignmentDataset
    from modeling_evalign.data.dsec_builder import DsecAlignmentBuilder
    from modeling_evalign.features.extraction import encode_events, encode_targets

    tree = synthetic_tree(tmp_path_factory)
    script = Path(__file__).resolve().parents[1] / "dataset_scripts" / "extract_features.py"
    spec = importlib.util.spec_from_file_location("extract_features_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = [
        "--data-dir",
        str(tree),
        "--duration",
        "500ms",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "feat"),
        "--event-model",
        "tiny",
        "--event-pooling",
        "tokens",
        "--target-tokens",
        "patch",
        "--val-fraction",
        "0.5",
        "--test-fraction",
        "0",
        "--shard-size",
        "4",
    ]
    results = module.main(args)
    assert sorted(results) == ["train", "validation"]
    builder = DsecAlignmentBuilder(
        config_name="500ms",
        data_dir=str(tree),
        cache_dir=str(tmp_path / "cache"),
        val_fraction=0.5,
        test_fraction=0.0,
    )
    model = tiny_clip_vision()
    opts = ExtractionOptions(event_pooling="tokens", target_tokens="patch")
    for split in ("train", "validation"):
        rows = builder.as_dataset(split=split)
        feats = AlignmentDataset.from_directory(tmp_path / "feat" / split)
        assert len(feats) == len(rows) == 6
        assert [s["sequence"] for s in feats.samples] == rows["sequence"]
        assert [s["window_start_us"] for s in feats.samples] == rows["window_start_us"]
        with torch.no_grad():
            ev = encode_events(model, [rows[5]["eventgpt_frames"]], opts)[0]
            tg = encode_targets(model, [rows[5]["rgb"]], opts)[0]
        torch.testing.assert_close(feats[5]["event_features"], ev, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(feats[5]["target_features"], tg, atol=1e-5, rtol=1e-5)
    assert tuple(feats[0]["event_features"].shape) == (5 + 17, 64)
    assert tuple(feats[0]["target_features"].shape) == (16, 64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_concat_safetensors_streams_the_same_tensor(tmp_path, dtype):
    from safetensors.torch import save_file

    from modeling_evalign.features.safetensors_concat import concat_safetensors

    parts = [torch.randn(n, 3, 5).to(dtype) for n in (2, 1, 4)]
    paths = []
    for i, part in enumerate(parts):
        paths.append(tmp_path / f"s{i}.safetensors")
        save_file({"event": part, "other": torch.zeros(1)}, paths[-1])
    shape = concat_safetensors(paths, "event", tmp_path / "out.safetensors")
    assert shape == [7, 3, 5]
    got = load_file(tmp_path / "out.safetensors")
    assert list(got) == ["features"] and got["features"].dtype == dtype
    assert torch.equal(got["features"], torch.cat(parts))

    save_file({"event": torch.zeros(2, 3, 6)}, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="bad.safetensors"):
        concat_safetensors([*paths, tmp_path / "bad.safetensors"], "event", tmp_path / "x.safetensors")
    with pytest.raises(KeyError, match="target"):
        concat_safetensors(paths, "target", tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_load_clip_vision_from_a_full_clip_checkpoint(tmp_path):
    """Real runs load CLIPVisionModel from CLIPModel repos (openai/clip-vit-large-patch14-336)."""
    from transformers import CLIPModel

    from modeling_evalign.features.extraction import load_clip_vision
    from modeling_evalign.features.tiny_models import tiny_clip_config

    full = CLIPModel(tiny_clip_config()).eval()
    full.save_pretrained(tmp_path)
    vision = load_clip_vision(str(tmp_path))
    assert not vision.training and not any(p.requires_grad for p in vision.parameters())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = full.vision_model(pixel_values=x).last_hidden_state
        torch.testing.assert_close(vision(pixel_values=x).last_hidden_state, ref)
    with pytest.raises(OSError):
        load_clip_vision(str(tmp_path / "missing"))
