"""Reconstruction-bridging strategy: events -> FireNet/E2VID -> robust rescale -> CLIP preprocessing -> frozen CLIP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from package_blocker import without_package
from safetensors import safe_open

from modeling_evalign.events.representations import voxel_grid
from modeling_evalign.features.clip_preprocessing import clip_preprocess as clip_preprocess_uint8
from modeling_evalign.features.clip_preprocessing import clip_preprocess_tensor as clip_preprocess
from modeling_evalign.features.tiny_models import tiny_clip_config
from modeling_evalign.reconstruction.configuration_reconstruction import ReconstructionAlignmentConfig
from modeling_evalign.reconstruction.modeling_reconstruction import (
    ReconstructionAlignmentModule,
    encode_windows,
    robust_rescale,
)

FIRENET = Path(__file__).resolve().parents[1] / ".." / "shared" / "weights" / "firenet" / "model.pth"
H, W = 24, 32


def tiny_vision():
    return tiny_clip_config().vision_config.to_dict()


def make_model(**kw):
    cfg = dict(clip_config=tiny_vision(), events_per_step_fraction=0.5)
    cfg.update(kw)
    return ReconstructionAlignmentModule(ReconstructionAlignmentConfig(**cfg)).eval()


def window(rng, n, t0, seq=None):
    w = dict(x=rng.integers(0, W, n).astype(np.uint16), y=rng.integers(0, H, n).astype(np.uint16),
             t=np.sort(rng.integers(t0, t0 + 50_000, n)).astype(np.int64), p=rng.integers(0, 2, n).astype(np.uint8))
    if seq is not None:
        w["sequence"] = seq
    return w


def test_robust_rescale_matches_numpy_percentiles():
    img = torch.randn(3, 1, 17, 9) * 5 + 2
    out = robust_rescale(img, 1.0, 99.0)
    for b in range(3):
        a = img[b].double().numpy()
        lo, hi = np.percentile(a, 1), np.percentile(a, 99)
        ref = np.clip((a - lo) / (hi - lo), 0, 1)
        np.testing.assert_allclose(out[b].numpy(), ref, rtol=1e-5, atol=1e-5)
    assert out.min() == 0 and out.max() == 1


def test_clip_preprocess_matches_uint8_path_and_closed_form():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (2, 30, 45, 3), dtype=np.uint8)
    ref = clip_preprocess_uint8(list(imgs), 16)
    got = clip_preprocess(torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255, 16)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    # a constant grey image is (c - mean) / std per channel
    mean, std = torch.tensor([0.48145466, 0.4578275, 0.40821073]), torch.tensor([0.26862954, 0.26130258, 0.27577711])
    out = clip_preprocess(torch.full((1, 3, 20, 50), 0.3), 8)
    assert out.shape == (1, 3, 8, 8)
    torch.testing.assert_close(out[0, :, 3, 3], (0.3 - mean) / std)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        clip_preprocess(torch.zeros(1, 1, 8, 8), 8)


def test_forward_shapes_and_equivalence_to_manual_pipeline():
    model = make_model()
    voxel = torch.randn(2, 3, 5, H, W)
    with torch.no_grad():
        out = model(voxel)
        # manual: the net over 3 steps, robust rescale, grey -> RGB, CLIP preprocessing, tower
        states = None
        for s in range(3):
            rec = model.reconstructor(voxel[:, s], prev_states=states)
            states = rec.states
        img = robust_rescale(rec.image)
        pv = clip_preprocess(img.repeat(1, 3, 1, 1), 32)
        clip = model.clip_tower(pixel_values=pv)
    assert out.aligned_features.shape == (2, 64) and out.token_features.shape == (2, 17, 64)
    assert model.config.target_dim == 64 and model.config.event_dim == 5
    torch.testing.assert_close(out.aligned_features, clip.pooler_output)
    torch.testing.assert_close(out.token_features, clip.last_hidden_state)
    torch.testing.assert_close(out.images, img)


def test_evaluation_losses_against_targets():
    model = make_model()
    voxel = torch.randn(2, 5, H, W)
    pooled_t, tokens_t = torch.randn(2, 64), torch.randn(2, 17, 64)
    with torch.no_grad():
        out = model(event_features=voxel, target_features=pooled_t)  # the other strategies' input name
        tok = model(voxel, target_features=tokens_t)
    a, t = out.aligned_features.double(), pooled_t.double()
    assert torch.isclose(out.mse_loss.double(), ((a - t) ** 2).mean(), rtol=1e-5)
    cos = (a * t).sum(-1) / (a.norm(dim=-1) * t.norm(dim=-1))
    assert torch.isclose(out.cosine_loss.double(), (1 - cos).mean(), rtol=1e-5)
    assert torch.equal(out.loss, out.mse_loss)
    assert torch.isclose(tok.mse_loss.double(), ((tok.token_features.double() - tokens_t.double()) ** 2).mean(), rtol=1e-5)
    with pytest.raises(ValueError, match="target_features"):
        model(voxel, target_features=torch.randn(2, 10))


def test_penultimate_layer_tokens():
    model = make_model(feature_layer=-2)
    voxel = torch.randn(1, 5, H, W)
    with torch.no_grad():
        out = model(voxel)
        clip = model.clip_tower(pixel_values=out.pixel_values, output_hidden_states=True)
    torch.testing.assert_close(out.token_features, clip.hidden_states[-2])
    assert not torch.allclose(out.token_features, clip.last_hidden_state)


def test_event_steps_split_and_voxelisation():
    model = make_model(events_per_step_fraction=0.5)  # 0.5 * 24 * 32 = 384 events per step
    w = window(np.random.default_rng(0), 1000, 0)
    steps = model.event_steps(w["x"], w["y"], w["t"], w["p"], H, W)
    assert steps.shape == (2, 5, H, W)  # 1000 // 384 = 2 steps: 384 events, then 616 (with the remainder)
    for s, (a, b) in enumerate([(0, 384), (384, 1000)]):
        ref = voxel_grid(w["x"][a:b], w["y"][a:b], w["t"][a:b], w["p"][a:b], 5, H, W, normalize=True)
        np.testing.assert_allclose(steps[s].numpy(), ref, rtol=1e-6, atol=1e-6)
    tw = {k: torch.from_numpy(v.astype(np.int64)) for k, v in w.items()}  # torch input gives the same grids
    torch.testing.assert_close(model.event_steps(tw["x"], tw["y"], tw["t"], tw["p"], H, W), steps, rtol=1e-5, atol=1e-5)
    assert model.event_steps(w["x"][:700], w["y"][:700], w["t"][:700], w["p"][:700], H, W).shape[0] == 1
    capped = make_model(events_per_step_fraction=0.1, max_steps_per_window=3)  # 76 per step -> 13, capped to 3
    steps = capped.event_steps(w["x"], w["y"], w["t"], w["p"], H, W)
    assert steps.shape[0] == 3
    for s, (a, b) in enumerate([(0, 333), (333, 666), (666, 1000)]):
        ref = voxel_grid(w["x"][a:b], w["y"][a:b], w["t"][a:b], w["p"][a:b], 5, H, W, normalize=True)
        np.testing.assert_allclose(steps[s].numpy(), ref, rtol=1e-6, atol=1e-6)
    one = make_model(events_per_step_fraction=0.0).event_steps(w["x"], w["y"], w["t"], w["p"], H, W)
    np.testing.assert_allclose(one[0].numpy(), voxel_grid(w["x"], w["y"], w["t"], w["p"], 5, H, W, normalize=True),
                               rtol=1e-6, atol=1e-6)


def test_stream_carries_state_and_resets_per_sequence():
    model = make_model()
    rng = np.random.default_rng(1)
    w1, w2, w3 = window(rng, 500, 0, "a"), window(rng, 500, 50_000, "a"), window(rng, 500, 0, "b")
    feats = encode_windows(model, [w1, w2, w3], height=H, width=W, progress=False)
    assert feats.shape == (3, 64)
    with torch.no_grad():
        s1 = model.event_steps(w1["x"], w1["y"], w1["t"], w1["p"], H, W)[None]
        s2 = model.event_steps(w2["x"], w2["y"], w2["t"], w2["p"], H, W)[None]
        s3 = model.event_steps(w3["x"], w3["y"], w3["t"], w3["p"], H, W)[None]
        o1 = model(s1)
        o2 = model(s2, prev_states=o1.states)
        fresh2 = model(s2)
        o3 = model(s3)
    torch.testing.assert_close(feats, torch.cat([o1.aligned_features, o2.aligned_features, o3.aligned_features]))
    assert not torch.allclose(o2.aligned_features, fresh2.aligned_features)  # state mattered
    # the stream method is the same, for one sequence; token-level output has the token axis
    torch.testing.assert_close(model.encode_stream([w1, w2], H, W, progress=False), feats[:2])
    toks = encode_windows(model, [(w1["x"], w1["y"], w1["t"], w1["p"])], height=H, width=W, token_level=True,
                          progress=False)
    assert toks.shape == (1, 17, 64)


def test_checkpoint_excludes_clip_and_round_trips(tmp_path):
    model = make_model(reconstruction_config={"model_type": "evalign_e2vid", "num_encoders": 2,
                                              "base_num_channels": 4, "num_residual_blocks": 1})
    model.save_pretrained(tmp_path / "m")
    with safe_open(tmp_path / "m" / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith("reconstructor.") for k in keys)
    assert not any("clip" in k or "vision" in k for k in keys)
    loaded = ReconstructionAlignmentModule.from_pretrained(tmp_path / "m").eval()
    from transformers import AutoModel

    auto = AutoModel.from_pretrained(tmp_path / "m", trust_remote_code=False).eval()
    assert type(auto) is ReconstructionAlignmentModule
    voxel = torch.randn(1, 5, H, W)
    with torch.no_grad():
        ref = model(voxel).aligned_features
        assert torch.equal(loaded(voxel).aligned_features, ref)  # same weights, same seeded test tower
        assert torch.equal(auto(voxel).aligned_features, ref)


@pytest.mark.skipif(not FIRENET.is_file(), reason=f"pretrained FireNet weights not found at {FIRENET}")
def test_from_original_and_converted_reconstruction_checkpoints(tmp_path):
    from modeling_evalign.reconstruction.checkpoint import convert_original_checkpoint

    raw = torch.load(FIRENET, map_location="cpu", weights_only=True)["state_dict"]
    direct = ReconstructionAlignmentModule.from_reconstruction_checkpoint(FIRENET, clip_config=tiny_vision())
    convert_original_checkpoint(FIRENET, tmp_path / "fn")
    via_dir = ReconstructionAlignmentModule.from_reconstruction_checkpoint(tmp_path / "fn", clip_config=tiny_vision())
    for model in (direct, via_dir):
        assert model.config.reconstruction_config["model_type"] == "evalign_firenet"
        for k, v in model.reconstructor.state_dict().items():
            assert torch.equal(v, raw["net." + k]), k


def test_errors():
    model = make_model()
    with pytest.raises(ValueError, match="voxel has shape"):
        model(torch.randn(5, H, W))
    with pytest.raises(ValueError, match="num_bins=5"):
        model(torch.randn(1, 4, H, W))
    with pytest.raises(KeyError, match="x, y, t, p"):
        encode_windows(model, [{"x": np.zeros(3)}], height=H, width=W, progress=False)
    with pytest.raises(ValueError, match="empty"):
        encode_windows(model, [], height=H, width=W, progress=False)
    with pytest.raises(ValueError, match="reconstruction_config"):
        ReconstructionAlignmentConfig(reconstruction_config={"model_type": "bert"}, clip_config=tiny_vision())
    with pytest.raises(ValueError, match="event_dim"):
        ReconstructionAlignmentConfig(event_dim=7, clip_config=tiny_vision())
    with pytest.raises(ValueError, match="percentile_low"):
        ReconstructionAlignmentConfig(percentile_low=99, percentile_high=1, clip_config=tiny_vision())
    bad = window(np.random.default_rng(0), 10, 0)
    bad["x"][0] = W + 3
    with pytest.raises(ValueError):
        encode_windows(model, [bad], height=H, width=W, progress=False)


@pytest.mark.slow
@pytest.mark.skipif(not FIRENET.is_file(), reason=f"pretrained FireNet weights not found at {FIRENET}")
def test_dsec_window_stream_end_to_end(tmp_path):
    """Simulated events -> DSEC events.h5 -> reader windows -> encode_windows: the carried state gives
    reconstructions that follow the true intensity, better than restarting at every window."""
    sim_mod = pytest.importorskip("modeling_evalign.events.simulator", reason="event simulator (H3) not available")
    writer_mod = pytest.importorskip("modeling_evalign.events.dsec_writer", reason="DSEC writer (H3) not available")
    reader_mod = pytest.importorskip("modeling_evalign.events.dsec_reader", reason="DSEC reader (H3) not available")
    h, w, offset = 48, 64, 7_000_000
    rng = np.random.default_rng(0)
    kx, ky = rng.uniform(-0.3, 0.3, 12), rng.uniform(-0.3, 0.3, 12)
    phase, amp = rng.uniform(0, 2 * np.pi, 12), rng.uniform(0.5, 1, 12)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)

    def render(t_us):  # random plane waves translating at 120 px/s
        s = xx - 120.0 * t_us * 1e-6
        f = sum(a * np.sin(u * s + v * yy + p) for a, u, v, p in zip(amp, kx, ky, phase))
        return np.clip(128 + 50 * f / np.sqrt((amp**2).sum() / 2), 1, 255)

    sim = sim_mod.EventSimulator(h, w, contrast_threshold=0.2, seed=0)
    writer = writer_mod.DsecEventWriter(tmp_path / "events.h5", t_offset=offset)
    for ev in sim_mod.simulate_adaptive(render, sim, 0, 300_000):
        writer.append(ev.x, ev.y, ev.t, ev.p)
    writer.close(300_000)
    reader = reader_mod.DsecEventReader(tmp_path / "events.h5", height=h, width=w)
    windows = [reader.read_window(offset + k * 50_000, offset + (k + 1) * 50_000) for k in range(6)]

    model = ReconstructionAlignmentModule.from_reconstruction_checkpoint(FIRENET, clip_config=tiny_vision())
    feats = encode_windows(model, windows, progress=False)  # sensor size taken from the windows
    assert feats.shape == (6, 64)

    def corr(out, win):
        return np.corrcoef(out.images[0, 0].numpy().ravel(), render(int(win.t[-1]) - offset).ravel())[0, 1]

    model.reset()
    carried = []
    for win in windows:
        out = model.encode_window(win.x, win.y, win.t, win.p, h, w)
        carried.append(corr(out, win))
    torch.testing.assert_close(out.aligned_features, feats[-1:])  # encode_windows carried the same state
    restarted = []
    for win in windows[-2:]:
        model.reset()
        restarted.append(corr(model.encode_window(win.x, win.y, win.t, win.p, h, w), win))
    assert np.mean(carried[-2:]) >= 0.75, carried  # about 0.9 here
    assert np.mean(carried[-2:]) > np.mean(restarted) + 0.05, (carried, restarted)


REMOTE_SCRIPT = without_package(r"""
import os, sys
import torch
from safetensors.torch import load_file
from transformers import AutoModel

folder = sys.argv[2]
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
data = load_file(os.path.join(folder, "expected.safetensors"))
with torch.no_grad():
    assert torch.equal(model(data["voxel"]).aligned_features, data["pooled"])
win = {k: data[k].numpy() for k in ("x", "y", "t", "p")}
assert torch.equal(model.encode_stream([win, win], 24, 32, progress=False), data["stream"])
assert not any(m == "modeling_evalign" or m.startswith("modeling_evalign.") for m in sys.modules)
print("OK")
""")


@pytest.mark.slow
def test_trust_remote_code_without_the_package(tmp_path):
    import subprocess
    import sys

    from safetensors.torch import save_file

    model = make_model(reconstruction_config={"model_type": "evalign_e2vid", "num_encoders": 2,
                                              "base_num_channels": 4, "num_residual_blocks": 1})
    folder = tmp_path / "ckpt"
    model.save_pretrained(folder)
    voxel = torch.randn(1, 5, H, W)
    win = window(np.random.default_rng(3), 600, 0)
    with torch.no_grad():
        pooled = model(voxel).aligned_features
    stream = model.encode_stream([win, win], H, W, progress=False)
    save_file({"voxel": voxel, "pooled": pooled, "stream": stream,
               **{k: torch.from_numpy(v.astype(np.int64)) for k, v in win.items()}},
              str(folder / "expected.safetensors"))
    repo = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", REMOTE_SCRIPT, str(repo), str(folder)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr[-3000:]
