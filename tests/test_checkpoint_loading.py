"""Loading the original E2VID / FireNet checkpoints: conversion, both FireNet layouts, safety, strictness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modeling_evalign.reconstruction.checkpoint import (
    UnsafeCheckpointError,
    convert_original_checkpoint,
    load_original_checkpoint,
)
from modeling_evalign.reconstruction.configuration_e2vid import E2VIDConfig
from modeling_evalign.reconstruction.configuration_firenet import FireNetConfig
from modeling_evalign.reconstruction.convert import main as convert_main
from modeling_evalign.reconstruction.modeling_e2vid import E2VIDModel
from modeling_evalign.reconstruction.modeling_firenet import FireNetModel

FIRENET = Path(__file__).resolve().parents[1] / ".." / "shared" / "weights" / "firenet" / "model.pth"
needs_firenet = pytest.mark.skipif(
    not FIRENET.is_file(), reason=f"pretrained FireNet weights not found at {FIRENET} (not shipped with the repo)"
)
_MARKER: list[str] = []


class Foreign:
    """A class whose unpickling would have a side effect: loading must refuse it before that happens."""

    def __setstate__(self, state):
        _MARKER.append("unpickled")


def raw_firenet():
    return torch.load(FIRENET, map_location="cpu", weights_only=True)


def firenet_functional(sd: dict[str, torch.Tensor], voxel: torch.Tensor, states):
    """Independent FireNet forward from the raw (unconverted, "net." layout) tensors with torch.nn.functional."""
    def conv(x, name, pad):
        return F.conv2d(x, sd[f"net.{name}.weight"], sd[f"net.{name}.bias"], padding=pad)

    def gru(x, h, name):
        h = torch.zeros(x.shape[0], 16, *x.shape[2:]) if h is None else h
        xh = torch.cat([x, h], 1)
        u = torch.sigmoid(conv(xh, f"{name}.update_gate", 1))
        r = torch.sigmoid(conv(xh, f"{name}.reset_gate", 1))
        o = torch.tanh(conv(torch.cat([x, h * r], 1), f"{name}.out_gate", 1))
        return h * (1 - u) + o * u

    def res(x, name):
        y = F.relu(conv(x, f"{name}.conv1", 1))
        return F.relu(conv(y, f"{name}.conv2", 1) + x)

    x = F.relu(conv(voxel, "head.conv.conv2d", 1))
    h0 = gru(x, states[0], "head.recurrent_block")
    x = res(h0, "resblocks.0.conv")
    h1 = gru(x, states[1], "resblocks.0.recurrent_block")
    x = res(h1, "resblocks.1")
    return conv(x, "pred.conv2d", 0), (h0, h1)


@needs_firenet
def test_real_firenet_conversion_matches_functional_reference(tmp_path, capsys):
    assert convert_main([str(FIRENET), str(tmp_path / "hf")]) == 0
    model = FireNetModel.from_pretrained(tmp_path / "hf").eval()
    assert (tmp_path / "hf" / "conversion_info.json").is_file()
    sd = raw_firenet()["state_dict"]
    g = torch.Generator().manual_seed(0)
    states, ref_states = None, (None, None)
    with torch.no_grad():
        for _ in range(3):
            voxel = torch.randn(2, 5, 24, 40, generator=g)
            out = model(voxel, prev_states=states)
            ref, ref_states = firenet_functional(sd, voxel, ref_states)
            states = out.states
            torch.testing.assert_close(out.image, ref, rtol=1e-5, atol=1e-5)
    assert out.image.std() > 1e-3  # a real, non-constant reconstruction


@needs_firenet
def test_second_firenet_layout_and_both_torch_formats(tmp_path):
    ckpt = raw_firenet()
    renames = {"net.head.conv.conv2d.": "head.conv2d.", "net.head.recurrent_block.": "G1.",
               "net.resblocks.0.conv.": "R1.", "net.resblocks.0.recurrent_block.": "G2.",
               "net.resblocks.1.": "R2.", "net.pred.": "pred."}
    gr = {}
    for k, v in ckpt["state_dict"].items():
        old = next(o for o in renames if k.startswith(o))
        gr[renames[old] + k[len(old):]] = v
    assert any(k.startswith("G2.") for k in gr)
    alt = {"arch": "FireNet", "model": {"num_bins": 5, "base_num_channels": 16, "kernel_size": 3}, "state_dict": gr}
    torch.save(alt, tmp_path / "gr_zip.pth")
    torch.save(alt, tmp_path / "gr_legacy.pth", _use_new_zipfile_serialization=False)
    torch.save(ckpt, tmp_path / "net_zip.pth")
    reference = load_original_checkpoint(FIRENET).state_dict()
    for name in ("gr_zip.pth", "gr_legacy.pth", "net_zip.pth"):
        got = load_original_checkpoint(tmp_path / name).state_dict()
        assert got.keys() == reference.keys()
        assert all(torch.equal(got[k], reference[k]) for k in got), name


@needs_firenet
def test_converted_round_trip_is_bit_exact(tmp_path):
    out = convert_original_checkpoint(FIRENET, tmp_path / "a")
    first = FireNetModel.from_pretrained(out)
    first.save_pretrained(tmp_path / "b")
    second = FireNetModel.from_pretrained(tmp_path / "b")
    raw = raw_firenet()["state_dict"]
    for k, v in second.state_dict().items():
        assert torch.equal(v, raw["net." + k]), k
        assert torch.equal(v, first.state_dict()[k]), k


@needs_firenet
@pytest.mark.slow
def test_real_firenet_reconstructs_simulated_translating_texture():
    sim_mod = pytest.importorskip("modeling_evalign.events.simulator", reason="event simulator (H3) not available")
    from modeling_evalign.events.representations import voxel_grid

    h, w = 64, 96
    rng = np.random.default_rng(0)
    k = 12
    kx, ky = rng.uniform(-0.25, 0.25, k), rng.uniform(-0.25, 0.25, k)
    phase, amp = rng.uniform(0, 2 * np.pi, k), rng.uniform(0.5, 1, k)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)

    def render(t_us):  # sum of random plane waves translating at 150 px/s: smooth, known intensity
        s = xx - 150.0 * t_us * 1e-6
        f = sum(a * np.sin(u * s + v * yy + p) for a, u, v, p in zip(amp, kx, ky, phase))
        return np.clip(128 + 50 * f / np.sqrt((amp**2).sum() / 2), 1, 255)

    sim = sim_mod.EventSimulator(h, w, contrast_threshold=0.2, seed=0)
    ev = sim_mod.Events.concatenate(list(sim_mod.simulate_adaptive(render, sim, 0, 400_000)))
    model = load_original_checkpoint(FIRENET)
    n = int(0.35 * h * w)
    states, rs = None, []
    with torch.no_grad():
        for a in range(0, len(ev) - n + 1, n):
            s = slice(a, a + n)
            voxel = voxel_grid(ev.x[s], ev.y[s], ev.t[s], ev.p[s], 5, h, w, normalize=True)
            out = model(torch.from_numpy(voxel)[None], prev_states=states)
            states = out.states
            rs.append(np.corrcoef(out.image[0, 0].numpy().ravel(), render(ev.t[a + n - 1]).ravel())[0, 1])
    assert len(rs) >= 30
    assert np.mean(rs[15:]) >= 0.7, rs  # about 0.85-0.9 after warm-up here
    assert rs[0] < np.mean(rs[15:])  # it improves as the state integrates events


def save_e2vid_original(path, model, *, in_config=False, legacy=True, prefix="unetrecurrent."):
    kwargs = {"num_bins": 5, "skip_type": "sum", "num_encoders": 2, "base_num_channels": 4,
              "num_residual_blocks": 1, "norm": "BN", "use_upsample_conv": False, "recurrent_block_type": "convlstm"}
    sd = {prefix + k: v for k, v in model.state_dict().items()}
    ckpt = {"arch": "E2VIDRecurrent", "state_dict": sd}
    if in_config:
        ckpt["config"] = {"arch": "E2VIDRecurrent", "model": kwargs}
    else:
        ckpt["model"] = kwargs
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.mark.parametrize("in_config,legacy", [(False, True), (True, False)])
def test_e2vid_original_layout(tmp_path, in_config, legacy):
    src = E2VIDModel(E2VIDConfig(num_encoders=2, base_num_channels=4, num_residual_blocks=1))
    with torch.no_grad():
        for m in src.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
    path = save_e2vid_original(tmp_path / "e2vid.pth.tar", src, in_config=in_config, legacy=legacy)
    got = load_original_checkpoint(path)
    assert isinstance(got, E2VIDModel) and not got.training
    assert (got.config.num_encoders, got.config.base_num_channels, got.config.norm) == (2, 4, "BN")
    assert all(torch.equal(v, got.state_dict()[k]) for k, v in src.state_dict().items())


def test_wrong_keys_are_listed(tmp_path):
    src = E2VIDModel(E2VIDConfig(num_encoders=2, base_num_channels=4, num_residual_blocks=1))
    sd = {"unetrecurrent." + k: v for k, v in src.state_dict().items()}
    del sd["unetrecurrent.pred.conv2d.weight"]
    sd["unetrecurrent.extra_layer.weight"] = torch.zeros(1)
    torch.save({"arch": "E2VIDRecurrent", "model": {"num_encoders": 2, "base_num_channels": 4,
                "num_residual_blocks": 1}, "state_dict": sd}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"missing keys \['pred.conv2d.weight'\].*unexpected keys \['extra_layer.weight'\]"):
        load_original_checkpoint(tmp_path / "bad.pth")
    # a wrong hyper-parameter shows up as shape mismatches
    sd = {"unetrecurrent." + k: v for k, v in src.state_dict().items()}
    torch.save({"arch": "E2VIDRecurrent", "model": {"num_encoders": 2, "base_num_channels": 8,
                "num_residual_blocks": 1}, "state_dict": sd}, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match="wrong shape"):
        load_original_checkpoint(tmp_path / "shape.pth")


def test_foreign_pickle_is_refused_and_not_executed(tmp_path, capsys):
    for legacy in (True, False):
        path = tmp_path / f"foreign_{legacy}.pth"
        torch.save({"arch": "FireNet", "config": Foreign(), "state_dict": {}}, path,
                   _use_new_zipfile_serialization=not legacy)
        with pytest.raises(UnsafeCheckpointError, match=r"Foreign") as info:
            load_original_checkpoint(path)
        assert str(path) in str(info.value)
    assert _MARKER == []  # the class's unpickling code never ran
    assert convert_main([str(path), str(tmp_path / "out")]) == 2
    assert "refused" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unreadable_files(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"arch": "FireNet", "state_dict": FireNetModel(FireNetConfig()).state_dict()}, good,
               _use_new_zipfile_serialization=False)
    data = good.read_bytes()
    for name, content in (("truncated.pth", data[: len(data) // 2]), ("empty.pth", b""), ("text.pth", b"hello" * 9)):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=name):
            load_original_checkpoint(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_original_checkpoint(tmp_path / "missing.pth")
    torch.save({"arch": "SomethingElse", "state_dict": {"a": torch.zeros(1)}}, tmp_path / "arch.pth")
    with pytest.raises(ValueError, match="unsupported arch 'SomethingElse'"):
        load_original_checkpoint(tmp_path / "arch.pth")
    torch.save({"arch": "FireNet"}, tmp_path / "nosd.pth")
    with pytest.raises(KeyError, match="no 'state_dict'"):
        load_original_checkpoint(tmp_path / "nosd.pth")
    # loads fine untruncated
    assert isinstance(load_original_checkpoint(good), FireNetModel)



@needs_firenet
def test_dataset_script_wrapper(tmp_path, monkeypatch):
    import runpy
    import sys

    script = Path(__file__).resolve().parents[1] / "dataset_scripts" / "convert_e2vid_checkpoint.py"
    monkeypatch.setattr(sys, "argv", [str(script), str(FIRENET), str(tmp_path / "out")])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(script), run_name="__main__")
    assert info.value.code == 0
    loaded = FireNetModel.from_pretrained(tmp_path / "out")
    reference = load_original_checkpoint(FIRENET)
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in loaded.state_dict().items())
