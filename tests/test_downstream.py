"""The downstream stage: video-layout features (chunk times by hand), the main job end to end with a tiny VLM built
from configs (accuracies recomputed from the stored answers by a slow loop, rgb_video's agreement and alpha 1 by
construction, the results.json schema of issue 19) and a rerun that reuses the cached features and runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from modeling_evalign.downstream.features import chunk_end_times, frame_at_or_before

TINY_PROXY = dict(photos=["astronaut", "coffee"], image_size=32, patch_size=16, hidden_size=32, intermediate_size=64,
                  vision_layers=1, text_layers=1, num_heads=2, projection_dim=16, train_sequences_per_photo=1,
                  test_sequences_per_photo=1, frames_per_sequence=4, render_size=(42, 32), steps=4, batch_size=4,
                  warmup_steps=1, checkpoint_every=4)


def test_chunk_end_times_by_hand():
    # 13 events, 5 chunks of 13 // 5 = 2 events, the remainder (3) in the last: ends at events 1, 3, 5, 7, 12
    t = np.array([100, 110, 130, 160, 200, 250, 310, 380, 460, 550, 650, 760, 880])
    assert chunk_end_times(t, 90).tolist() == [110, 160, 250, 380, 880]
    # fewer events than frames: everything in the last chunk (EventGPT), the empty ones take the window start
    assert chunk_end_times(np.array([500, 700]), 90).tolist() == [90, 90, 90, 90, 700]
    assert chunk_end_times(np.array([], dtype=np.int64), 90).tolist() == [90] * 5
    # the chunk split is EventGPT's: frame i of representations.eventgpt_frames holds exactly chunk i's events
    from modeling_evalign.events.representations import eventgpt_frames

    x, y, p = np.arange(13) % 4, np.arange(13) // 4, np.ones(13, np.uint8)
    frames = eventgpt_frames(x.astype(np.uint16), y.astype(np.uint16), t, p, 4, 4)
    painted = [(f != 255).any(-1).reshape(-1).nonzero()[0].tolist() for f in frames]
    assert painted == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9, 10, 11, 12]]
    # the latest frame at or before each time (20 Hz stamps), the first frame for earlier times
    stamps = np.array([1000, 51000, 101000, 151000])
    assert frame_at_or_before(stamps, [999, 1000, 50999, 51000, 200000]).tolist() == [0, 0, 0, 1, 3]


def _tiny_vlm(root: Path, tower_dir: Path, labels) -> Path:
    """target/ and draft/: VideoLlava on the proxy tower's weights, a random tiny decoder, the offline tokenizer."""
    from transformers import (
        CLIPVisionConfig,
        CLIPVisionModel,
        LlamaConfig,
        VideoLlavaConfig,
        VideoLlavaForConditionalGeneration,
    )

    from modeling_evalign.downstream.prompts import IMAGE_TOKEN, VIDEO_TOKEN, build_tokenizer
    from modeling_evalign.downstream.questions import all_texts

    tok = build_tokenizer(all_texts(labels))
    vision = CLIPVisionConfig.from_pretrained(tower_dir)
    patches = (vision.image_size // vision.patch_size) ** 2
    tower = CLIPVisionModel.from_pretrained(tower_dir)
    for name, (hidden, layers) in {"target": (32, 2), "draft": (16, 1)}.items():
        text = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                           num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
                           max_position_embeddings=256, initializer_range=0.5, eos_token_id=tok.eos_token_id,
                           bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id)
        config = VideoLlavaConfig(vision_config=vision, text_config=text,
                                  image_token_index=tok.convert_tokens_to_ids(IMAGE_TOKEN),
                                  video_token_index=tok.convert_tokens_to_ids(VIDEO_TOKEN), image_seq_length=patches,
                                  video_seq_length=5 * (patches + 1), vision_feature_layer=-2,
                                  vision_feature_select_strategy="default")
        torch.manual_seed(1)
        model = VideoLlavaForConditionalGeneration(config).eval()
        for t in (model.model.image_tower, model.model.video_tower):
            t.load_state_dict(tower.state_dict())
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return root


@pytest.mark.slow
def test_downstream_stage_end_to_end(tmp_path):
    from modeling_evalign.data.alignment_dataset import AlignmentDataset
    from modeling_evalign.downstream.evaluate import normalize_answer
    from modeling_evalign.downstream.features import FRAME_FILE, NUM_FRAMES, load_split, tower_tokens
    from modeling_evalign.downstream.report import format_downstream_table
    from modeling_evalign.features.proxy_clip import ProxyClipConfig, ensure_proxy_clip
    from modeling_evalign.pipeline.features import load_vision_tower
    from modeling_evalign.pipeline.job import PipelineConfig, run_pipeline

    tower_dir = ensure_proxy_clip(tmp_path / "towers", ProxyClipConfig(**TINY_PROXY), progress=False, log=lambda m: None)
    vlm = _tiny_vlm(tmp_path / "vlm", tower_dir, ["astronaut", "cup of coffee"])
    out = tmp_path / "demo"
    cfg = PipelineConfig(output_dir=str(out), sequences=6, seconds=2.2, sensor_size=(64, 48), image_size=(96, 72),
                         val_fraction=0.17, test_fraction=0.17, photos=["astronaut", "coffee"], durations=["1s"],
                         strategies=["unaligned", "closed_form", "lightweight"], num_epochs=1, batch_size=4,
                         proxy_clip=TINY_PROXY, proxy_cache_dir=str(tmp_path / "towers"), firenet=None,
                         vlm=str(vlm), downstream_epochs=1, downstream_max_new_tokens=6, downstream_gamma=2)
    run_pipeline(cfg)
    saved = json.loads((out / "results.json").read_text())
    rows = saved["downstream"]
    assert [r["condition"] for r in rows] == ["rgb_video", "rgb_frame", "unaligned", "closed_form", "lightweight"]
    for r in rows:
        assert set(r) == {"duration", "condition", "accuracy", "accuracy_by_type", "agreement", "alpha", "n"}
        assert set(r["accuracy_by_type"]) == {"scene", "motion", "zoom", "caption"}
    assert set(saved["speculative"]) == {"1s"}
    assert {"speedup", "tokens_identical", "alpha", "gamma", "cost_ratio", "condition"} <= set(saved["speculative"]["1s"])
    assert saved["speculative"]["1s"]["tokens_identical"] is True  # the exact loop: the target's greedy output
    video = rows[0]
    assert video["agreement"] == 1.0 and video["alpha"] == 1.0  # the reference against itself, exact

    # accuracies and agreement recomputed from the stored answers by a slow loop
    stored = json.loads((out / "downstream" / "1s" / "answers.json").read_text())
    truth = stored["truth"]
    for r in rows:
        answers = stored["answers"][r["condition"]]
        hits = agree = total = 0
        for qtype in ("scene", "motion", "zoom", "caption"):
            ok = n = 0
            for i, gt in enumerate(truth):
                if gt[qtype] is None:
                    continue
                same = normalize_answer(answers[qtype][i]) == normalize_answer(gt[qtype])
                ok, n = ok + same, n + 1
                agree += normalize_answer(answers[qtype][i]) == normalize_answer(stored["answers"]["rgb_video"][qtype][i])
            if n:
                assert r["accuracy_by_type"][qtype] == pytest.approx(ok / n)
            hits, total = hits + ok, total + n
        assert r["accuracy"] == pytest.approx(hits / total) and r["agreement"] == pytest.approx(agree / total)
        assert r["n"] == len(truth)

    # the stored video features against a hand computation for one test window: chunk ends from the raw events,
    # the latest PNG at or before each, the tower's penultimate tokens (CLS kept); the frame path drops CLS
    from dsec_tree import raw_sequence
    from PIL import Image

    test, frame, frames = load_split(out / "features" / "1s" / "downstream" / "test")
    assert frames == NUM_FRAMES and (out / "features" / "1s" / "downstream" / "test" / FRAME_FILE).is_file()
    s = test.samples_list()[1]
    raw = raw_sequence(out / "dsec" / s["sequence"])
    t = raw["events"]["t"].astype(np.int64) + raw["t_offset"]
    t = t[(t >= s["window_start_us"]) & (t < s["window_end_us"])]
    per = len(t) // 5
    ends = [int(t[(i + 1) * per - 1]) for i in range(4)] + [int(t[-1])]
    stamps = np.asarray(raw["timestamps"])
    idx = [int(np.flatnonzero(stamps <= e)[-1]) for e in ends]
    assert s["chunk_end_us"] == ends and s["video_frame_indices"] == idx
    vision = load_vision_tower(str(tower_dir))
    png = out / "dsec" / s["sequence"] / "images" / "left" / "rectified"
    images = [np.asarray(Image.open(png / f"{k:06d}.png").convert("RGB")) for k in idx]
    expect = tower_tokens(vision, images).flatten(0, 1)
    assert torch.allclose(test.target_features[1].float(), expect, atol=1e-4)
    end_frame = int(np.flatnonzero(stamps <= s["window_end_us"])[-1])
    single = tower_tokens(vision, [np.asarray(Image.open(png / f"{end_frame:06d}.png").convert("RGB"))])[0, 1:]
    assert torch.allclose(frame[1].float(), single, atol=1e-4)
    assert AlignmentDataset.from_directory(out / "features" / "1s" / "downstream" / "train").event_shape[0] == \
        5 * (single.shape[0] + 1)

    # results.md holds the downstream table; a rerun reuses the cached features and trained runs
    assert format_downstream_table(rows, saved["speculative"], saved["downstream_s"]) in (out / "results.md").read_text()
    cached = out / "features" / "1s" / "downstream" / "test" / "event_features.safetensors"
    model = out / "runs" / "1s" / "downstream" / "lightweight" / "final" / "model.safetensors"
    before = cached.stat().st_mtime_ns, model.stat().st_mtime_ns
    run_pipeline(cfg)
    assert (cached.stat().st_mtime_ns, model.stat().st_mtime_ns) == before
    assert json.loads((out / "results.json").read_text())["downstream"] == rows


def test_downstream_flags_and_bad_input(tmp_path):
    from modeling_evalign.downstream.evaluate import Condition, evaluate_conditions
    from modeling_evalign.pipeline.config import PipelineConfig, parse_args

    assert parse_args(["--no-downstream"]).downstream is False
    assert parse_args([]).downstream is True
    assert parse_args(["--downstream-max-windows", "7"]).downstream_max_windows == 7
    with pytest.raises(ValueError, match="downstream_max_windows"):
        PipelineConfig(output_dir=str(tmp_path), downstream_max_windows=-1)
    video = Condition("rgb_video", "video", torch.zeros(3, 5, 2, 4))
    with pytest.raises(ValueError, match="rgb_video"):
        evaluate_conditions(None, None, [Condition("unaligned", "video", video.features)], [{}] * 3, "1s")
    with pytest.raises(ValueError, match="expected 3 each"):
        evaluate_conditions(None, None, [video, Condition("x", "video", torch.zeros(2, 5, 2, 4))], [{}] * 3, "1s")
