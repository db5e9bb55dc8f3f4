"""Feature extraction: CLIP preprocessing, EventGPT pooling, encoders, resumable sharded writer."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

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
REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "dataset_scripts" / "extract_features.py"


def _script_module():
    spec = importlib.util.spec_from_file_location("extract_features_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    from dsec_tree import synthetic_tree

    from modeling_evalign.data.alignment_dataset import AlignmentDataset
    from modeling_evalign.data.dsec_builder import DsecAlignmentBuilder
    from modeling_evalign.features.extraction import encode_events, encode_targets

    tree = synthetic_tree(tmp_path_factory)
    module = _script_module()
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
    results = module.main(args)  # --source dsec: windows read straight from the recordings
    assert sorted(results) == ["train", "validation"]
    builder = DsecAlignmentBuilder(
        config_name="500ms",
        data_dir=str(tree),
        cache_dir=str(tmp_path / "cache"),
        val_fraction=0.5,
        test_fraction=0.0,
    )
    builder.download_and_prepare()
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
    # the builder cache as the source gives the same files, byte for byte
    out_builder = str(tmp_path / "feat_builder")
    module.main([out_builder if a == str(tmp_path / "feat") else a for a in args]
                + ["--source", "builder", "--splits", "validation"])
    for name in ("event_features.safetensors", "target_features.safetensors", "metadata.json"):
        a = (tmp_path / "feat" / "validation" / name).read_bytes()
        assert (tmp_path / "feat_builder" / "validation" / name).read_bytes() == a, name


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


def _open_event_files() -> list[str]:
    """events.h5 files this process holds open (Linux /proc)."""
    import os

    paths = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return [p for p in paths if p.endswith("events.h5")]


def test_dsec_windows_open_hdf5_lazily_and_workers_give_the_same_features(tmp_path_factory, tmp_path, one_thread):
    import pickle

    from dsec_tree import synthetic_tree

    from modeling_evalign.features.dsec_windows import DsecWindows

    tree = synthetic_tree(tmp_path_factory)
    rows = DsecWindows(tree, "500ms", split=None)
    assert len(rows) == 12 and rows.split_names == ["train"]  # 2 sequences: 10% rounds to no validation
    val = DsecWindows(tree, "500ms", split="validation", val_fraction=0.5, test_fraction=0.0)
    assert len(val) == 6 and val.split_names == ["train", "validation"] and len(val.sequence_dirs) == 1
    assert _open_event_files() == []  # the index is built with every file closed again: safe to fork
    first = rows[0]
    assert len(_open_event_files()) == 1  # opened on first read, in the reading process
    copy = pickle.loads(pickle.dumps(rows))
    assert copy._sequences == {}  # handles never travel to another process
    again = copy[0]
    assert all(np.array_equal(a, b) for a, b in zip(first["eventgpt_frames"], again["eventgpt_frames"]))
    assert first["event_count"] == again["event_count"] > 0
    rows.close(), copy.close()
    assert _open_event_files() == []
    with pytest.raises(IndexError, match="outside"):
        rows[12]
    with pytest.raises(ValueError, match="split"):
        DsecWindows(tree, "500ms", split="dev")
    with pytest.raises(ValueError, match="duration"):
        DsecWindows(tree, "3s")

    model = tiny_clip_vision()
    opts = ExtractionOptions(event_pooling="tokens", target_tokens="patch")
    kw = dict(options=opts, batch_size=3, shard_size=4, progress=False)
    workers = extract_features(rows, tmp_path / "w2", model, num_workers=2, **kw)
    assert _open_event_files() == []  # the workers read the recordings, not this process
    main = extract_features(rows, tmp_path / "w0", model, num_workers=0, **kw)
    assert main.num_samples == workers.num_samples == 12
    for name in ("event_features.safetensors", "target_features.safetensors", "metadata.json"):
        assert (tmp_path / "w0" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes(), name
    with pytest.raises(ValueError, match="num_workers"):
        extract_features(rows, tmp_path / "bad", model, num_workers=-1, **kw)


def test_bf16_close_to_fp32_and_stored_dtypes(tmp_path, one_thread):
    model = tiny_clip_vision()
    examples = _examples(4)
    opts = ExtractionOptions(event_pooling="tokens", target_tokens="all", target_layer=-2)
    kw = dict(options=opts, batch_size=2, shard_size=3, progress=False)

    def run(name, **extra):
        res = extract_features(examples, tmp_path / name, model, **kw, **extra)
        ev = load_file(tmp_path / name / "event_features.safetensors")["features"]
        tg = load_file(tmp_path / name / "target_features.safetensors")["features"]
        return res, ev, tg

    _, ev32, tg32 = run("fp32")
    res, ev_bf, tg_bf = run("bf16", dtype="bfloat16", save_dtype=None)  # stored as computed
    assert ev_bf.dtype == tg_bf.dtype == torch.bfloat16
    assert res.metadata["extraction"]["compute_dtype"] == "torch.bfloat16"
    # bf16 keeps 8 mantissa bits: after 2 blocks under autocast the features stay within 3% of the
    # largest fp32 value and point the same way (cosine > 0.999 per token)
    for got, ref in ((ev_bf, ev32), (tg_bf, tg32)):
        got = got.float()
        assert (got - ref).abs().max() <= 0.03 * ref.abs().max()
        assert torch.nn.functional.cosine_similarity(got, ref, dim=-1).min() > 0.999
        assert not torch.equal(got, ref)  # bf16 really ran
    _, ev_bf32, _ = run("bf16_as_fp32", dtype="bfloat16", save_dtype="float32")
    assert ev_bf32.dtype == torch.float32 and torch.equal(ev_bf32.to(torch.bfloat16), ev_bf)
    # fp16 has no fast CPU matmul: computed in fp32, stored in fp16 (exactly the rounded fp32 features)
    res, ev16, tg16 = run("fp16", dtype=torch.float16, save_dtype=None)
    assert ev16.dtype == torch.float16 and res.metadata["extraction"]["compute_dtype"] == "torch.float32"
    assert torch.equal(ev16, ev32.half()) and torch.equal(tg16, tg32.half())

    from modeling_evalign.data.alignment_dataset import AlignmentDataset

    ds = AlignmentDataset.from_directory(tmp_path / "bf16")  # bf16 directories load
    torch.testing.assert_close(ds[1]["event_features"].float(), ev_bf[1].float())
    with pytest.raises(ValueError, match="dtype must be one of"):
        extract_features(examples, tmp_path / "x", model, dtype="float64", progress=False)
    with pytest.raises(RuntimeError, match="test hook"):
        extract_features(examples, tmp_path / "p", model, shard_size=1, _fail_after_shards=1, progress=False)
    with pytest.raises(ValueError, match="different settings"):  # a bf16 run does not resume fp32 shards
        extract_features(examples, tmp_path / "p", model, shard_size=1, dtype="bfloat16", progress=False)


def test_process_share_of_shards():
    from modeling_evalign.features.extraction_distributed import ExtractionProcess

    pending = [2, 3, 5, 7, 8]
    shares = [ExtractionProcess(r, 2).take(pending) for r in range(2)]
    assert shares == [[2, 5, 8], [3, 7]]  # round robin over the missing shards: disjoint, complete
    assert ExtractionProcess().take(pending) == pending and ExtractionProcess().is_main
    with pytest.raises(ValueError, match="process_index"):
        ExtractionProcess(2, 2)


def test_script_bad_flags_one_line_exit_2(tmp_path, capsys):
    from modeling_evalign.utils.cli import run_cli

    module = _script_module()
    base = ["--data-dir", str(tmp_path), "--out", str(tmp_path / "o"), "--event-model", "tiny"]
    with pytest.raises(SystemExit) as err:
        module.main([*base, "--dtype", "float64"])
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--dtype" in lines[0] and "float64" in lines[0]
    for flags, word in ((["--batch-size", "0"], "--batch-size"), (["--num-workers", "-2"], "--num-workers"),
                        ([], "no sequence with events")):
        assert run_cli(lambda argv: module.main(argv) and 0, [*base, *flags], prog="extract_features.py") == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("extract_features.py: error:") and word in lines[0]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_resume_and_equal_one_process(tmp_path_factory, tmp_path, one_thread):
    """`accelerate launch` with 2 CPU processes resumes a killed 1-process run; the files equal a 1-process run's."""
    import os
    import subprocess
    import sys

    from dsec_tree import synthetic_tree

    from modeling_evalign.features.dsec_windows import DsecWindows

    tree = synthetic_tree(tmp_path_factory)
    flags = ["--data-dir", str(tree), "--duration", "200ms", "--val-fraction", "0", "--test-fraction", "0",
             "--event-model", "tiny", "--event-pooling", "tokens", "--target-tokens", "patch",
             "--batch-size", "2", "--shard-size", "3"]
    one = _script_module().main([*flags, "--out", str(tmp_path / "one")])["train"]
    assert one.num_samples >= 20 and one.num_processes == 1

    # a 1-process run killed after 2 shards (same rows, encoder and options as the script's)
    rows = DsecWindows(tree, "200ms", split="train", val_fraction=0.0, test_fraction=0.0)
    opts = ExtractionOptions(event_pooling="tokens", target_tokens="patch")
    with pytest.raises(RuntimeError, match="test hook"):
        extract_features(rows, tmp_path / "two" / "train", tiny_clip_vision(), options=opts, batch_size=2,
                         shard_size=3, split="train", progress=False, _fail_after_shards=2)

    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([*launch, str(SCRIPT), *flags, "--out", str(tmp_path / "two")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = [line for line in proc.stdout.splitlines() if line.startswith("train:")]
    assert len(summary) == 1, proc.stdout  # printed once, by the main process
    assert "(2 shards already done)" in summary[0] and "(2 processes, float32)" in summary[0]
    assert f"encoded {one.num_samples - 6} windows" in summary[0] and "windows/s" in summary[0]
    for name in ("event_features.safetensors", "target_features.safetensors", "metadata.json"):
        assert (tmp_path / "two" / "train" / name).read_bytes() == (tmp_path / "one" / "train" / name).read_bytes()
    assert not (tmp_path / "two" / "train" / SHARD_DIR).exists()
