"""Lightweight adapter: config checks, token-grid resampling, whitening, closed-form ridge, save/load, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modeling_evalign.contrastive.configuration_contrastive import ContrastiveAlignmentConfig
from modeling_evalign.lightweight.configuration_lightweight import LightweightAlignmentConfig
from modeling_evalign.lightweight.modeling_lightweight import LightweightAlignmentModule
from modeling_evalign.modeling_outputs import AlignmentOutput
from modeling_evalign.token_grid import resample_token_grid


def _recall_at_1(aligned: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of rows whose most cosine-similar target is their own (tiny local helper)."""
    sim = F.normalize(aligned, dim=-1) @ F.normalize(target, dim=-1).T
    return (sim.argmax(dim=1) == torch.arange(len(sim))).float().mean().item()


# -- config ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"event_dim": -4}, r"event_dim=-4 .*positive int"),
        ({"target_dim": 0}, r"target_dim=0"),
        ({"adapter_type": "conv"}, r"adapter_type='conv'.*\('linear', 'mlp'\)"),
        ({"source_grid": [24, 24]}, r"target_grid.*both set or both None"),
        ({"source_grid": [24], "target_grid": [16, 16]}, r"source_grid=\[24\].*\[height, width\]"),
        ({"resample_mode": "lanczos"}, r"resample_mode='lanczos'.*bilinear"),
        ({"mse_weight": 0.0, "cosine_weight": 0.0}, r"mse_weight \+ cosine_weight > 0"),
        ({"dropout": 1.5}, r"dropout=1.5"),
    ],
)
def test_config_rejects_bad_values(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        LightweightAlignmentConfig(**kwargs)


def test_config_from_another_model_type_is_refused(tmp_path):
    ContrastiveAlignmentConfig(event_dim=4, target_dim=4).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type='evalign_contrastive'.*'evalign_lightweight'"):
        LightweightAlignmentConfig.from_pretrained(tmp_path)


# -- token grid -----------------------------------------------------------------------------------
def _reference_resample(tokens, src, dst, keep_cls, mode):
    """Hand reference: reshape the 24x24 patches to [B, D, H, W], interpolate, flatten back."""
    b, _, d = tokens.shape
    grid = tokens[:, 1:].transpose(1, 2).reshape(b, d, src, src)
    kwargs = {} if mode == "area" else {"align_corners": False}
    out = F.interpolate(grid, size=(dst, dst), mode=mode, **kwargs).reshape(b, d, dst * dst).transpose(1, 2)
    return torch.cat([tokens[:, :1], out], dim=1) if keep_cls else out


@pytest.mark.parametrize("mode", ["bilinear", "area"])
@pytest.mark.parametrize("keep_cls", [True, False])
def test_resample_577_to_257_tokens_matches_interpolate(mode, keep_cls):
    tokens = torch.randn(2, 1 + 24 * 24, 8, dtype=torch.float64)
    got = resample_token_grid(tokens, (24, 24), (16, 16), has_cls=True, keep_cls=keep_cls, mode=mode)
    assert got.shape == (2, 257 if keep_cls else 256, 8)
    torch.testing.assert_close(got, _reference_resample(tokens, 24, 16, keep_cls, mode), rtol=0, atol=1e-12)
    if keep_cls:
        assert torch.equal(got[:, 0], tokens[:, 0])


def test_resample_non_square_grid_against_per_element_loop():
    # area 4x6 -> 2x3 is the mean of each 2x2 block: check with an explicit loop
    tokens = torch.randn(1, 24, 3, dtype=torch.float64)  # no CLS
    got = resample_token_grid(tokens, (4, 6), (2, 3), has_cls=False, mode="area")
    grid = tokens[0].reshape(4, 6, 3)
    for i in range(2):
        for j in range(3):
            want = grid[2 * i:2 * i + 2, 2 * j:2 * j + 2].reshape(4, 3).mean(0)
            torch.testing.assert_close(got[0, i * 3 + j], want, rtol=0, atol=1e-12)


def test_resample_rejects_wrong_token_count():
    with pytest.raises(ValueError, match=r"576 tokens: expected 577 = 1 CLS \+ 24x24"):
        resample_token_grid(torch.randn(1, 576, 4), (24, 24), (16, 16))
    with pytest.raises(ValueError, match=r"\[B, N, D\]"):
        resample_token_grid(torch.randn(577, 4), (24, 24), (16, 16))


def test_model_resamples_tokens_and_linear_commutes_with_interpolation():
    cfg = LightweightAlignmentConfig(event_dim=6, target_dim=5, source_grid=[6, 6], target_grid=[4, 4],
                                     keep_cls_token=False, dtype="float64")
    model = LightweightAlignmentModule(cfg).double()
    tokens = torch.randn(3, 37, 6, dtype=torch.float64)
    out = model(tokens).aligned_features
    assert out.shape == (3, 16, 5)
    # adapter applied per token first, then resampled: same result for a linear adapter
    per_token = F.linear(tokens, model.proj.weight, model.proj.bias)
    want = resample_token_grid(per_token, (6, 6), (4, 4), keep_cls=False)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)


# -- forward / errors -----------------------------------------------------------------------------
def test_forward_loss_against_float64_reference_and_bad_shapes():
    cfg = LightweightAlignmentConfig(event_dim=6, target_dim=4, cosine_weight=0.5)
    model = LightweightAlignmentModule(cfg)
    x, y = torch.randn(5, 6), torch.randn(5, 4)
    out = model(event_features=x, target_features=y)
    assert isinstance(out, AlignmentOutput) and out.loss.dim() == 0
    pred = (x.double() @ model.proj.weight.double().T + model.proj.bias.double()).detach().numpy()
    yn = y.double().numpy()
    cos = (pred * yn).sum(1) / (np.linalg.norm(pred, axis=1) * np.linalg.norm(yn, axis=1))
    want = ((pred - yn) ** 2).mean() + 0.5 * (1 - cos).mean()
    assert out.loss.item() == pytest.approx(want, rel=1e-5)
    assert model(x).loss is None
    with pytest.raises(ValueError, match=r"event_features has shape \(5, 7\).*D=6"):
        model(torch.randn(5, 7))
    with pytest.raises(ValueError, match=r"event_features has shape \(6,\)"):
        model(torch.randn(6))
    with pytest.raises(ValueError, match=r"target_features has shape \(5, 3\): expected \(5, 4\)"):
        model(x, torch.randn(5, 3))
    with pytest.raises(TypeError, match="event_features must be a torch.Tensor"):
        model(x.numpy())


def test_mlp_residual_identity_and_projection():
    same = LightweightAlignmentModule(LightweightAlignmentConfig(event_dim=6, target_dim=6, adapter_type="mlp",
                                                                 hidden_dim=3))
    x = torch.randn(4, 6)
    assert same.skip is None
    torch.testing.assert_close(same(x).aligned_features, x)  # residual branch starts at zero
    proj = LightweightAlignmentModule(LightweightAlignmentConfig(event_dim=6, target_dim=4, adapter_type="mlp",
                                                                 hidden_dim=3))
    torch.testing.assert_close(proj(x).aligned_features, proj.skip(x))


# -- whitening and closed form --------------------------------------------------------------------
def test_fit_whitening_matches_numpy_zca():
    cfg = LightweightAlignmentConfig(event_dim=5, target_dim=3, use_whitening=True, whitening_eps=1e-6)
    model = LightweightAlignmentModule(cfg).double()
    mix = torch.randn(5, 5, dtype=torch.float64)
    x = torch.randn(400, 5, dtype=torch.float64) @ mix + 3.0
    model.fit_whitening(x)
    xn = x.numpy()
    cov = np.cov(xn, rowvar=False)
    evals, evecs = np.linalg.eigh(cov)
    w = evecs @ np.diag(1 / np.sqrt(evals + 1e-6)) @ evecs.T
    np.testing.assert_allclose(model.whitening_matrix.numpy(), w, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(model.whitening_mean.numpy(), xn.mean(0), rtol=1e-12)
    white = (x - model.whitening_mean) @ model.whitening_matrix
    np.testing.assert_allclose(np.cov(white.numpy(), rowvar=False), np.eye(5), atol=1e-4)
    with pytest.raises(ValueError, match="use_whitening=True"):
        LightweightAlignmentModule(LightweightAlignmentConfig(event_dim=5, target_dim=3)).fit_whitening(x)


def _augmented_lstsq(x: np.ndarray, y: np.ndarray, ridge: float):
    """Ridge with an unpenalised bias as one least-squares problem: [X 1; sqrt(r) I 0] [W; b] = [Y; 0]."""
    n, d = x.shape
    a = np.vstack([np.hstack([x, np.ones((n, 1))]), np.hstack([np.sqrt(ridge) * np.eye(d), np.zeros((d, 1))])])
    rhs = np.vstack([y, np.zeros((d, y.shape[1]))])
    sol = np.linalg.lstsq(a, rhs, rcond=None)[0]
    return sol[:d], sol[d]


@pytest.mark.parametrize("ridge", [0.0, 0.5, 10.0])
def test_fit_closed_form_matches_lstsq_on_augmented_system(ridge):
    model = LightweightAlignmentModule(LightweightAlignmentConfig(event_dim=6, target_dim=4))
    x = torch.randn(50, 6, dtype=torch.float64) * 2 + 1
    y = x @ torch.randn(6, 4, dtype=torch.float64) + 0.3 * torch.randn(50, 4, dtype=torch.float64) - 2
    fit = model.fit_closed_form(x.float(), y.float(), ridge=ridge)
    w, b = _augmented_lstsq(x.float().double().numpy(), y.float().double().numpy(), ridge)
    np.testing.assert_allclose(fit.weight.numpy(), w.T, rtol=0, atol=1e-8)
    np.testing.assert_allclose(fit.bias.numpy(), b, rtol=0, atol=1e-8)
    # written into the linear layer (float32 copy of the float64 solution)
    torch.testing.assert_close(model.proj.weight, fit.weight.float(), rtol=0, atol=0)
    pred = model(x.float()).aligned_features.double()
    assert ((pred - y) ** 2).mean().item() == pytest.approx(fit.train_mse, rel=1e-4)


def test_fit_closed_form_tokens_mlp_and_errors():
    cfg = LightweightAlignmentConfig(event_dim=4, target_dim=3, adapter_type="mlp", hidden_dim=2,
                                     source_grid=[4, 4], target_grid=[2, 2], keep_cls_token=True)
    model = LightweightAlignmentModule(cfg).double()
    model._FIT_CHUNK_ROWS = 40  # 2 samples of 17 tokens per chunk: the moments are accumulated over 3 chunks
    x = torch.randn(6, 17, 4, dtype=torch.float64)
    y = torch.randn(6, 5, 3, dtype=torch.float64) + 5
    fit = model.fit_closed_form(x, y, ridge=0.1)
    rows = resample_token_grid(x, (4, 4), (2, 2)).reshape(-1, 4).numpy()
    w, b = _augmented_lstsq(rows, y.reshape(-1, 3).numpy(), 0.1)
    np.testing.assert_allclose(fit.weight.numpy(), w.T, atol=1e-8)
    # the residual branch is zeroed, so the model now predicts exactly the ridge fit
    np.testing.assert_allclose(model(x).aligned_features.reshape(-1, 3).detach().numpy(), rows @ w + b, atol=1e-10)
    with pytest.raises(ValueError, match="target_features gives 8 rows but event_features gives 10 .after token-grid resampling. for samples 0..1"):
        model.fit_closed_form(x, y[:, :4], ridge=0.1)
    with pytest.raises(ValueError, match="target_features has 5 samples but event_features has 6"):
        model.fit_closed_form(x, y[:5], ridge=0.1)
    with pytest.raises(ValueError, match="ridge=-1"):
        model.fit_closed_form(x, y, ridge=-1)
    same = LightweightAlignmentModule(LightweightAlignmentConfig(event_dim=3, target_dim=3, adapter_type="mlp"))
    with pytest.raises(ValueError, match="needs a linear layer"):
        same.fit_closed_form(torch.randn(5, 3), torch.randn(5, 3))


# -- save / load ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"adapter_type": "linear", "use_whitening": True},
        {"adapter_type": "mlp", "hidden_dim": 5, "source_grid": [3, 3], "target_grid": [2, 2]},
    ],
)
def test_save_load_round_trip_is_bit_exact(tmp_path, kwargs):
    from transformers import AutoModel

    model = LightweightAlignmentModule(LightweightAlignmentConfig(event_dim=6, target_dim=4, **kwargs))
    x = torch.randn(3, 10, 6)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))  # nothing may survive only because it equals its init
    if kwargs.get("use_whitening"):
        model.fit_whitening(x)
        assert not torch.equal(model.whitening_matrix, torch.eye(6))
    model.eval()
    model.save_pretrained(tmp_path / "ckpt")
    for loader in (LightweightAlignmentModule, AutoModel):
        loaded = loader.from_pretrained(tmp_path / "ckpt").eval()
        assert type(loaded) is LightweightAlignmentModule
        strip = {"_name_or_path", "auto_map"}
        assert {k: v for k, v in loaded.config.to_dict().items() if k not in strip} == {
            k: v for k, v in model.config.to_dict().items() if k not in strip
        }
        sd, sd2 = model.state_dict(), loaded.state_dict()
        assert sd.keys() == sd2.keys()
        assert all(torch.equal(sd[k], sd2[k]) for k in sd)
        assert torch.equal(loaded(x).aligned_features, model(x).aligned_features)
    assert ("whitening_matrix" in sd) == bool(kwargs.get("use_whitening"))


# -- training -------------------------------------------------------------------------------------
def test_training_lifts_recall_from_chance(one_thread):
    torch.manual_seed(0)
    n, d = 512, 32
    target = torch.randn(n, d)
    event = target @ torch.randn(d, d) / d**0.5 + 0.1 * torch.randn(n, d)
    model = LightweightAlignmentModule(LightweightAlignmentConfig(event_dim=d, target_dim=d, cosine_weight=0.1))
    with torch.no_grad():
        before = _recall_at_1(model(event).aligned_features, target)
    assert before < 0.05  # chance is 1/512
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        loss = model(event, target).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = _recall_at_1(model(event).aligned_features, target)
    assert after > 0.9
    # the closed form reaches the same regime instantly
    fresh = LightweightAlignmentModule(LightweightAlignmentConfig(event_dim=d, target_dim=d))
    fresh.fit_closed_form(event, target, ridge=1e-3)
    with torch.no_grad():
        assert _recall_at_1(fresh(event).aligned_features, target) > 0.9
