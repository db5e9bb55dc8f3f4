"""E2VID and FireNet as PreTrainedModels: exact parameter counts, padding, recurrence, references, round trips."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modeling_evalign.reconstruction.configuration_e2vid import E2VIDConfig
from modeling_evalign.reconstruction.configuration_firenet import FireNetConfig
from modeling_evalign.reconstruction.layers import ConvGRU, ConvLSTM
from modeling_evalign.reconstruction.modeling_e2vid import E2VIDModel
from modeling_evalign.reconstruction.modeling_firenet import FireNetModel


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def small_e2vid(**kw):
    cfg = dict(num_encoders=2, base_num_channels=4, num_residual_blocks=1)
    cfg.update(kw)
    return E2VIDModel(E2VIDConfig(**cfg))


def randomize_norm_stats(model):
    # BatchNorm/InstanceNorm running statistics start at 0/1: give them values so round trips can fail.
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if getattr(m, "running_mean", None) is not None:
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        if getattr(m, "weight", None) is not None and isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
    return model


def test_published_parameter_counts():
    assert n_params(E2VIDModel(E2VIDConfig.lightweight())) == 10_712_098
    assert n_params(FireNetModel(FireNetConfig())) == 37_777


def test_e2vid_parameter_count_closed_form_for_other_settings():
    # closed form for norm none, concat skips, upsample conv, convgru: an independent count
    b, n, k, nb, r = 8, 2, 5, 3, 1
    m = E2VIDModel(E2VIDConfig(num_bins=nb, num_encoders=n, base_num_channels=b, num_residual_blocks=r, norm="none",
                               skip_type="concat", use_upsample_conv=True, recurrent_block_type="convgru"))
    expected = nb * b * 25 + b  # head
    for i in range(n):
        cin, cout = b * 2**i, b * 2 ** (i + 1)
        expected += cin * cout * k * k + cout  # encoder conv
        expected += 3 * ((2 * cout) * cout * 9 + cout)  # ConvGRU
    width = b * 2**n
    expected += r * 2 * (width * width * 9 + width)
    for i in range(n, 0, -1):
        cin, cout = 2 * b * 2**i, b * 2 ** (i - 1)
        expected += cin * cout * k * k + cout
    expected += 2 * b + 1
    assert n_params(m) == expected


@pytest.mark.parametrize(
    "kw",
    [dict(), dict(use_upsample_conv=True), dict(skip_type="concat"), dict(norm="IN"),
     dict(norm="none", recurrent_block_type="convgru")],
)
def test_e2vid_padding_is_cropped_back(kw):
    model = randomize_norm_stats(small_e2vid(**kw)).eval()
    voxel = torch.randn(2, 5, 13, 22)
    with torch.no_grad():
        out = model(voxel)
        # reference: pad by hand to a multiple of 4 (zeros split evenly), run, crop
        padded = F.pad(voxel, (1, 1, 1, 2))
        ref = model(padded)
    assert out.image.shape == (2, 1, 13, 22)
    torch.testing.assert_close(out.image, ref.image[..., 1:14, 1:23], rtol=0, atol=1e-6)
    assert ((out.image >= 0) & (out.image <= 1)).all()  # sigmoid
    assert [tuple(s.shape) for s in out.states] == [(2, 2 if "recurrent_block_type" not in kw else 1, 8, 8, 12),
                                                     (2, 2 if "recurrent_block_type" not in kw else 1, 16, 4, 6)]


def test_recurrence_carries_state_and_batches_are_independent():
    model = randomize_norm_stats(small_e2vid()).eval()
    v1, v2 = torch.randn(2, 5, 16, 16), torch.randn(2, 5, 16, 16)
    with torch.no_grad():
        first = model(v1)
        second = model(v2, prev_states=first.states)
        fresh = model(v2)
        single = model(v2[1:], prev_states=tuple(s[1:] for s in first.states))
    assert not torch.allclose(second.image, fresh.image)  # the state matters
    torch.testing.assert_close(single.image, second.image[1:], rtol=1e-5, atol=1e-6)


def gru_reference(cell, x, h):
    """float64 ConvGRU from the published equations."""
    def conv(layer, inp):
        return F.conv2d(inp, layer.weight.double(), layer.bias.double(), padding=layer.padding)
    xh = torch.cat([x, h], 1)
    u = torch.sigmoid(conv(cell.update_gate, xh))
    r = torch.sigmoid(conv(cell.reset_gate, xh))
    o = torch.tanh(conv(cell.out_gate, torch.cat([x, h * r], 1)))
    return h * (1 - u) + o * u


def lstm_reference(cell, x, h, c):
    """float64 ConvLSTM, slow per-gate version: gates ordered input, forget, output, cell."""
    w, b = cell.Gates.weight.double(), cell.Gates.bias.double()
    hs = cell.hidden_size
    xh = torch.cat([x, h], 1)
    gate = [F.conv2d(xh, w[j * hs:(j + 1) * hs], b[j * hs:(j + 1) * hs], padding=1) for j in range(4)]
    c_new = torch.sigmoid(gate[1]) * c + torch.sigmoid(gate[0]) * torch.tanh(gate[3])
    return torch.sigmoid(gate[2]) * torch.tanh(c_new), c_new


def test_recurrent_cells_match_float64_references():
    x, h, c = torch.randn(2, 3, 6, 5), torch.randn(2, 4, 6, 5), torch.randn(2, 4, 6, 5)
    gru = ConvGRU(3, 4, 3)
    out, state = gru(x, h.unsqueeze(1))
    torch.testing.assert_close(out.double(), gru_reference(gru, x.double(), h.double()), rtol=1e-5, atol=1e-6)
    assert state.shape == (2, 1, 4, 6, 5)
    out0, _ = gru(x, None)
    torch.testing.assert_close(out0.double(), gru_reference(gru, x.double(), torch.zeros_like(h).double()),
                               rtol=1e-5, atol=1e-6)
    lstm = ConvLSTM(3, 4, 3)
    out, state = lstm(x, torch.stack([h, c], 1))
    rh, rc = lstm_reference(lstm, x.double(), h.double(), c.double())
    torch.testing.assert_close(out.double(), rh, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state[:, 1].double(), rc, rtol=1e-5, atol=1e-6)


def test_firenet_any_size_no_activation():
    model = FireNetModel(FireNetConfig()).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 5, 7, 11) * 3)
    assert out.image.shape == (1, 1, 7, 11)
    assert [tuple(s.shape) for s in out.states] == [(1, 1, 16, 7, 11)] * 2


@pytest.mark.parametrize("cls,cfg", [(E2VIDModel, E2VIDConfig(num_encoders=2, base_num_channels=4)),
                                     (FireNetModel, FireNetConfig(base_num_channels=4))])
def test_save_load_round_trip_bit_exact(tmp_path, cls, cfg):
    from transformers import AutoModel

    import modeling_evalign  # noqa: F401  (registers the Auto classes)

    model = randomize_norm_stats(cls(cfg)).eval()
    model.save_pretrained(tmp_path / "m")
    for loaded in (cls.from_pretrained(tmp_path / "m"), AutoModel.from_pretrained(tmp_path / "m", trust_remote_code=False)):
        assert type(loaded) is cls
        ref, got = model.state_dict(), loaded.state_dict()
        assert ref.keys() == got.keys()
        for k in ref:
            assert torch.equal(ref[k], got[k]), k
        voxel = torch.randn(1, 5, 8, 12)
        with torch.no_grad():
            assert torch.equal(model(voxel).image, loaded.eval()(voxel).image)


def test_bad_input_and_config_errors():
    model = FireNetModel(FireNetConfig())
    with pytest.raises(ValueError, match=r"num_bins=5"):
        model(torch.randn(1, 4, 8, 8))
    with pytest.raises(TypeError, match="floating"):
        model(torch.zeros(1, 5, 8, 8, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        model([[0.0]])
    with pytest.raises(ValueError, match="prev_states"):
        model(torch.randn(1, 5, 8, 8), prev_states=(torch.zeros(1, 1, 16, 8, 8),))
    with pytest.raises(ValueError, match=r"prev_states\[0\]"):
        model(torch.randn(2, 5, 8, 8), prev_states=(torch.zeros(1, 1, 16, 8, 8),) * 2)
    with pytest.raises(ValueError, match=r"spatially: expected \(8, 8\)"):
        model(torch.randn(1, 5, 8, 8), prev_states=(torch.zeros(1, 1, 16, 6, 8),) * 2)
    e2vid = small_e2vid().eval()
    states = e2vid(torch.randn(1, 5, 16, 16)).states
    with pytest.raises(ValueError, match=r"prev_states\[0\] is \(8, 8\) spatially: expected \(12, 8\)"):
        e2vid(torch.randn(1, 5, 24, 16), prev_states=states)
    e2vid(torch.randn(1, 5, 15, 13), prev_states=states)  # pads to 16x16: the states fit
    with pytest.raises(ValueError, match="norm"):
        E2VIDConfig(norm="GN")
    with pytest.raises(ValueError, match="skip_type"):
        E2VIDConfig(skip_type="add")
    with pytest.raises(ValueError, match="kernel_size"):
        FireNetConfig(kernel_size=4)
    with pytest.raises(ValueError, match="evalign_e2vid"):
        E2VIDConfig.from_dict(FireNetConfig().to_dict())
