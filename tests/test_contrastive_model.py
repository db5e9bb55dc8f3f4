"""Feature-level contrastive strategy: config checks, InfoNCE value, logit-scale cap, save/load, training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from modeling_evalign.contrastive.configuration_contrastive import ContrastiveAlignmentConfig
from modeling_evalign.contrastive.modeling_contrastive import ContrastiveAlignmentModule
from modeling_evalign.lightweight.configuration_lightweight import LightweightAlignmentConfig
from modeling_evalign.modeling_outputs import AlignmentOutput, ContrastiveAlignmentOutput


def _info_nce_loop(ev: torch.Tensor, tg: torch.Tensor, scale: float) -> float:
    """Symmetric InfoNCE with an explicit log-softmax loop in float64."""
    ev = F.normalize(ev.double(), dim=-1)
    tg = F.normalize(tg.double(), dim=-1)
    n, total = ev.shape[0], 0.0
    for a, b in ((ev, tg), (tg, ev)):
        for i in range(n):
            logits = [scale * float(a[i] @ b[j]) for j in range(n)]
            m = max(logits)
            total -= logits[i] - (m + math.log(sum(math.exp(v - m) for v in logits)))
    return total / (2 * n)


def _recall_at_1(aligned: torch.Tensor, target: torch.Tensor) -> float:
    sim = F.normalize(aligned, dim=-1) @ F.normalize(target, dim=-1).T
    return (sim.argmax(dim=1) == torch.arange(len(sim))).float().mean().item()


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"temperature": 0.0}, r"temperature=0.0 is invalid: expected > 0"),
        ({"temperature": -0.1}, r"temperature=-0.1"),
        ({"temperature": 0.001}, r"temperature=0.001.*1 / max_logit_scale"),
        ({"event_dim": -768}, r"event_dim=-768 .*positive int"),
        ({"target_dim": 0}, r"target_dim=0"),
        ({"projection_type": "transformer"}, r"projection_type='transformer'.*\('linear', 'mlp'\)"),
        ({"token_pooling": "max"}, r"token_pooling='max'.*\('mean', 'cls', 'flatten'\)"),
        ({"contrastive_weight": 0.0, "mse_weight": 0.0}, r"contrastive_weight \+ mse_weight > 0"),
    ],
)
def test_config_rejects_bad_values(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        ContrastiveAlignmentConfig(**kwargs)


def test_defaults_follow_the_brief_and_other_model_type_is_refused(tmp_path):
    cfg = ContrastiveAlignmentConfig()
    assert (cfg.event_dim, cfg.target_dim, cfg.temperature) == (768, 1024, 0.07)
    LightweightAlignmentConfig(event_dim=4, target_dim=4).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type='evalign_lightweight'.*'evalign_contrastive'"):
        ContrastiveAlignmentConfig.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="evalign_lightweight"):
        ContrastiveAlignmentModule.from_pretrained(tmp_path)


def test_loss_matches_hand_infonce_and_logit_scale_init():
    model = ContrastiveAlignmentModule(ContrastiveAlignmentConfig(event_dim=6, target_dim=5))
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07), rel=1e-6)
    x, y = torch.randn(7, 6), torch.randn(7, 5)
    out = model(event_features=x, target_features=y)
    assert isinstance(out, ContrastiveAlignmentOutput) and isinstance(out, AlignmentOutput)
    assert out.aligned_features.shape == (7, 5) and out.loss.dim() == 0
    proj = x.double() @ model.event_head.layers[0].weight.double().T + model.event_head.layers[0].bias.double()
    want = _info_nce_loop(proj.detach(), y, 1 / 0.07)
    assert out.loss.item() == pytest.approx(want, rel=1e-5)
    assert out.contrastive_loss.item() == pytest.approx(want, rel=1e-5)
    assert out.mse_loss is None
    assert torch.equal(out.target_embeddings, y)  # no target head by default: the target space is kept
    assert out.logits_per_event.shape == (7, 7)
    assert out.logits_per_event[2, 3].item() == pytest.approx(
        (1 / 0.07) * F.cosine_similarity(proj[2], y[3].double(), dim=0).item(), rel=1e-5)


def test_logit_scale_is_clamped_at_100():
    model = ContrastiveAlignmentModule(ContrastiveAlignmentConfig(event_dim=4, target_dim=4))
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000.0))
    x, y = torch.randn(5, 4), torch.randn(5, 4)
    out = model(x, y)
    assert out.logit_scale.item() == pytest.approx(100.0, rel=1e-6)
    assert out.loss.item() == pytest.approx(_info_nce_loop(out.aligned_features.detach(), y, 100.0), rel=1e-5)
    out.loss.backward()
    assert model.logit_scale.grad.item() == 0.0
    fixed = ContrastiveAlignmentModule(ContrastiveAlignmentConfig(event_dim=4, target_dim=4,
                                                                  learnable_temperature=False))
    assert "logit_scale" not in dict(fixed.named_parameters()) and "logit_scale" in fixed.state_dict()


def test_mse_term_target_head_and_token_pooling():
    cfg = ContrastiveAlignmentConfig(event_dim=6, target_dim=5, mse_weight=2.0, projection_type="mlp",
                                     hidden_dim=8, token_pooling="cls")
    model = ContrastiveAlignmentModule(cfg)
    x, y = torch.randn(4, 3, 6), torch.randn(4, 3, 5)
    out = model(x, y)
    assert out.aligned_features.shape == (4, 3, 5)
    mse = ((out.aligned_features - y) ** 2).mean()
    ce = _info_nce_loop(out.aligned_features[:, 0].detach(), y[:, 0], 1 / 0.07)
    assert out.loss.item() == pytest.approx(ce + 2.0 * mse.item(), rel=1e-5)
    with pytest.raises(ValueError, match=r"MSE term needs \(4, 3, 5\)"):
        model(x, y[:, 0])
    head = ContrastiveAlignmentModule(ContrastiveAlignmentConfig(event_dim=6, target_dim=5, use_target_head=True))
    out = head(x[:, 0], y[:, 0])
    assert out.aligned_features.shape == (4, 5)  # aligned features stay unprojected by the target head
    torch.testing.assert_close(out.target_embeddings, head.target_head(y[:, 0]))


def test_flatten_pooling_keeps_the_token_layout():
    model = ContrastiveAlignmentModule(ContrastiveAlignmentConfig(event_dim=6, target_dim=5, token_pooling="flatten"))
    x, y = torch.randn(4, 3, 6), torch.randn(4, 3, 5)
    out = model(x, y)
    ce = _info_nce_loop(out.aligned_features.detach().flatten(1), y.flatten(1), 1 / 0.07)
    assert out.loss.item() == pytest.approx(ce, rel=1e-5)
    # the same tokens in another order are another layout: a different loss (mean pooling could not tell)
    assert model(x, y[:, [2, 0, 1]]).loss.item() != pytest.approx(out.loss.item(), rel=1e-3)
    with pytest.raises(ValueError, match=r"as many target tokens as event tokens.*\(4, 2, 5\)"):
        model(x, y[:, :2])


def test_bad_inputs_name_the_argument():
    model = ContrastiveAlignmentModule(ContrastiveAlignmentConfig(event_dim=6, target_dim=5))
    with pytest.raises(ValueError, match=r"event_features has shape \(3, 5\).*D=6"):
        model(torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"target_features has shape \(3, 6\).*D=5"):
        model(torch.randn(3, 6), torch.randn(3, 6))
    with pytest.raises(ValueError, match="target_features has batch 2: expected 3"):
        model(torch.randn(3, 6), torch.randn(2, 5))
    with pytest.raises(TypeError, match="target_feature"):  # a typo is not silently ignored
        model(event_features=torch.randn(3, 6), target_feature=torch.randn(3, 5))


@pytest.mark.parametrize("kwargs", [{}, {"learnable_temperature": False, "use_target_head": True,
                                         "projection_type": "mlp", "hidden_dim": 7}])
def test_save_load_round_trip_is_bit_exact(tmp_path, kwargs):
    from transformers import AutoModel

    model = ContrastiveAlignmentModule(ContrastiveAlignmentConfig(event_dim=6, target_dim=5, **kwargs))
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            t.add_(torch.rand_like(t))
    model.save_pretrained(tmp_path / "ckpt")
    x, y = torch.randn(4, 6), torch.randn(4, 5)
    for loader in (ContrastiveAlignmentModule, AutoModel):
        loaded = loader.from_pretrained(tmp_path / "ckpt")
        assert type(loaded) is ContrastiveAlignmentModule
        sd, sd2 = model.state_dict(), loaded.state_dict()
        assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
        a, b = model(x, y), loaded(x, y)
        assert torch.equal(a.aligned_features, b.aligned_features) and torch.equal(a.loss, b.loss)


def test_training_lifts_recall_from_chance(one_thread):
    torch.manual_seed(0)
    n, d = 512, 32
    target = torch.randn(n, d)
    event = target @ torch.randn(d, d) / d**0.5 + 0.1 * torch.randn(n, d)
    model = ContrastiveAlignmentModule(ContrastiveAlignmentConfig(event_dim=d, target_dim=d))
    with torch.no_grad():
        assert _recall_at_1(model(event).aligned_features, target) < 0.05  # chance is 1/512
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for step in range(200):
        rows = torch.randperm(n)[:128] if step % 2 else slice(None)
        loss = model(event[rows], target[rows]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert _recall_at_1(model(event).aligned_features, target) > 0.9
