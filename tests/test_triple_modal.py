"""Triple-modal (EventBind-style) alignment: loss terms by hand, zero-shot above chance, round trips."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from package_blocker import without_package
from safetensors import safe_open

from modeling_evalign.triple_modal.configuration_triple_modal import TripleModalAlignmentConfig
from modeling_evalign.triple_modal.modeling_triple_modal import TripleModalAlignmentModule
from modeling_evalign.triple_modal.text_tower import build_word_level_tokenizer, save_tiny_text_tower
from modeling_evalign.triple_modal.training import train_triple_modal

CLASSES = ["car", "tree", "house", "dog", "bridge", "person"]
TEMPLATES = TripleModalAlignmentConfig().event_prompt_template, TripleModalAlignmentConfig().image_prompt_template


@pytest.fixture(scope="module")
def tower(tmp_path_factory):
    texts = [t.format(c) for c in CLASSES for t in TEMPLATES]
    return str(save_tiny_text_tower(tmp_path_factory.mktemp("tower") / "clip", texts, projection_dim=16))


def _model(tower, **kw) -> TripleModalAlignmentModule:
    cfg = dict(event_dim=24, target_dim=16, hidden_dim=32, class_names=CLASSES, text_model_id=tower)
    cfg.update(kw)
    return TripleModalAlignmentModule(TripleModalAlignmentConfig(**cfg))


def _sym_ce_by_hand(a: torch.Tensor, b: torch.Tensor, scale: float) -> float:
    """(CE(a -> b) + CE(b -> a)) / 2 on cosine logits, element by element in float64."""
    a, b = a.double(), b.double()
    n = a.shape[0]

    def cos(u, v):
        return float((u @ v) / (u.norm() * v.norm()))

    total = 0.0
    for i in range(n):
        row = [scale * cos(a[i], b[j]) for j in range(n)]
        col = [scale * cos(b[i], a[j]) for j in range(n)]
        total += -(row[i] - math.log(sum(math.exp(x) for x in row)))
        total += -(col[i] - math.log(sum(math.exp(x) for x in col)))
    return total / (2 * n)


def test_loss_matches_hand_computation(tower):
    model = _model(tower, logit_scale=20.0, event_text_weight=0.5, event_image_weight=1.5,
                   image_text_weight=0.7, prompt_mse_weight=2.0)
    with torch.no_grad():  # a non-zero adapter so event prompts differ from the frozen embeddings
        model.event_prompt_adapter.weight.normal_(0, 0.2)
        model.event_prompt_adapter.bias.normal_(0, 0.1)
    g = torch.Generator().manual_seed(3)
    ev, img = torch.randn(5, 24, generator=g), torch.randn(5, 16, generator=g)
    labels = torch.tensor([0, 3, 1, 3, 5])
    with torch.no_grad():
        out = model(ev, img, labels=labels)

    scale = 20.0
    with torch.no_grad():
        aligned = model.event_head(ev).double()
        img_prompts, ev_prompts = (t.double() for t in model.prompt_features(CLASSES))
        w, b = model.event_prompt_adapter.weight.double(), model.event_prompt_adapter.bias.double()
    adapted = torch.stack([p + w @ p + b for p in ev_prompts])
    e_i = _sym_ce_by_hand(aligned, img.double(), scale)
    e_t = 0.0
    for i, c in enumerate(labels.tolist()):
        logits = [scale * float(aligned[i] @ adapted[k] / (aligned[i].norm() * adapted[k].norm())) for k in range(6)]
        e_t += -(logits[c] - math.log(sum(math.exp(x) for x in logits))) / len(labels)
    i_t = _sym_ce_by_hand(img_prompts, adapted, scale)
    mse = sum(
        float(((img_prompts[k] / img_prompts[k].norm() - adapted[k] / adapted[k].norm()) ** 2).sum()) for k in range(6)
    ) / (6 * 16)
    assert float(out.event_image_loss) == pytest.approx(e_i, rel=1e-5)
    assert float(out.event_text_loss) == pytest.approx(e_t, rel=1e-5)
    assert float(out.image_text_loss) == pytest.approx(i_t, rel=1e-5)
    assert float(out.prompt_mse_loss) == pytest.approx(mse, rel=1e-4)
    assert float(out.loss) == pytest.approx(1.5 * e_i + 0.5 * e_t + 0.7 * i_t + 2.0 * mse, rel=1e-5)
    assert out.logits_per_event.shape == (5, 6) and out.aligned_features.shape == (5, 16)


def test_caption_mode_and_frozen_prompts_start_equal(tower):
    model = _model(tower, logit_scale=10.0)
    g = torch.Generator().manual_seed(4)
    ev, img, cap = torch.randn(4, 24, generator=g), torch.randn(4, 16, generator=g), torch.randn(4, 16, generator=g)
    with torch.no_grad():
        out = model(ev, img, caption_features=cap)
    with torch.no_grad():
        aligned = model.event_head(ev)
    # the adapter starts at zero: adapted captions equal the captions, so the MSE term is 0
    assert float(out.prompt_mse_loss) == pytest.approx(0.0, abs=1e-12)
    assert float(out.event_text_loss) == pytest.approx(_sym_ce_by_hand(aligned, cap, 10.0), rel=1e-5)
    assert float(out.image_text_loss) == pytest.approx(_sym_ce_by_hand(cap, cap, 10.0), rel=1e-5, abs=1e-6)
    with pytest.raises(ValueError, match="not both"):
        model(ev, img, labels=torch.zeros(4, dtype=torch.long), caption_features=cap)


@pytest.mark.slow
def test_zero_shot_above_chance_after_training(tower):
    """Classes: image features sit at the class's image-prompt embedding plus noise; events are a
    linear map of the image features. Trained with 4 classes, classified among all 6."""
    torch.manual_seed(0)  # the initial weights, independent of the tests that ran before
    model = _model(tower, projection_type="linear")
    img_prompts, _ = model.prompt_features(CLASSES)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(6).repeat_interleave(20)
    centres = F.normalize(img_prompts, dim=-1)
    spread = float((centres - centres.mean(0)).norm(dim=-1).mean())
    image = centres[labels] + 0.3 * spread * torch.randn(len(labels), 16, generator=g)
    events = image @ torch.randn(16, 24, generator=g) + 0.05 * torch.randn(len(labels), 24, generator=g)
    seen = labels < 4
    before = (model.zero_shot_classify(events, CLASSES).labels == labels).float().mean()
    # 80 seen samples in 5 full batches (the loop drops an incomplete last batch)
    history = train_triple_modal(model, events[seen], image[seen], labels[seen], CLASSES[:4],
                                 epochs=40, batch_size=16, lr=3e-3)
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    result = model.zero_shot_classify(events, CLASSES)
    correct = (result.labels == labels).float()
    chance = 1 / 6
    assert float(correct.mean()) > 3 * chance, (float(before), float(correct.mean()))
    # zero-shot proper: examples of the 2 classes never seen in training, classified among those 2 names
    unseen = model.zero_shot_classify(events[~seen], CLASSES[4:]).labels + 4
    assert float((unseen == labels[~seen]).float().mean()) > 0.6
    assert torch.allclose(result.probabilities.sum(-1), torch.ones(len(labels)))
    assert torch.equal(result.labels, result.logits.argmax(-1))


def test_save_load_round_trip_without_text_tower(tower, tmp_path):
    from transformers import AutoModel

    import modeling_evalign  # noqa: F401  (registers the Auto classes)

    model = _model(tower, learnable_logit_scale=True, logit_scale=1 / 0.07)
    model.save_pretrained(tmp_path / "ckpt")
    with safe_open(str(tmp_path / "ckpt" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert keys == {"event_head.0.weight", "event_head.0.bias", "event_head.2.weight", "event_head.2.bias",
                    "event_prompt_adapter.weight", "event_prompt_adapter.bias", "logit_scale_log"}
    loaded = AutoModel.from_pretrained(tmp_path / "ckpt")
    assert type(loaded) is TripleModalAlignmentModule and loaded.config.text_model_id == tower
    x = torch.randn(3, 24)
    torch.testing.assert_close(loaded.zero_shot_classify(x).logits, model.zero_shot_classify(x).logits)
    assert float(loaded.scale().detach()) == pytest.approx(1 / 0.07, rel=1e-6)


def test_bad_input_is_rejected(tower):
    with pytest.raises(ValueError, match="event_prompt_template"):
        TripleModalAlignmentConfig(event_prompt_template="no placeholder")
    with pytest.raises(ValueError, match="logit_scale"):
        TripleModalAlignmentConfig(logit_scale=200.0)
    model = _model(tower)
    ev = torch.randn(2, 24)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 6\)"):
        model(ev, labels=torch.tensor([0, 6]))
    with pytest.raises(ValueError, match="event_features has shape"):
        model(torch.randn(2, 23))
    with pytest.raises(TypeError, match="extract features"):
        model.zero_shot_classify({"x": [1], "y": [1], "t": [0], "p": [1]}, CLASSES)
    with pytest.raises(ValueError, match="duplicates"):
        model.zero_shot_classify(ev, ["car", "car"])
    wrong = _model(tower, target_dim=8)
    with pytest.raises(ValueError, match="projection_dim=16"):
        wrong.zero_shot_classify(torch.randn(2, 24), CLASSES)


def test_token_mode_terms_by_hand_round_trip_and_errors(tower, tmp_path):
    from transformers import AutoModel

    import modeling_evalign  # noqa: F401  (registers the Auto classes)

    # patch tokens: 3 per window, width 24 on the event side and 20 on the RGB side; text space 16 wide
    model = _model(tower, image_features="tokens", image_token_dim=20, logit_scale=20.0, event_text_weight=0.5,
                   image_text_weight=0.0, prompt_mse_weight=0.0)
    g = torch.Generator().manual_seed(7)
    ev, img = torch.randn(5, 3, 24, generator=g), torch.randn(5, 3, 20, generator=g)
    labels = torch.tensor([0, 3, 1, 3, 5])
    with torch.no_grad():
        out = model(ev, img, labels=labels)
        tokens = model.event_head(ev).double()  # one map for every token
        pooled = model.text_head.weight.double() @ tokens.mean(1).T
        pooled = pooled.T + model.text_head.bias.double()
        _, ev_prompts = (t.double() for t in model.prompt_features(CLASSES))
    assert out.aligned_features.shape == (5, 3, 20) and out.text_embeddings.shape == (5, 16)
    torch.testing.assert_close(out.text_embeddings.double(), pooled, rtol=1e-5, atol=1e-6)
    e_i = _sym_ce_by_hand(tokens.flatten(1), img.flatten(1).double(), 20.0)  # the flattened token layouts
    assert float(out.event_image_loss) == pytest.approx(e_i, rel=1e-5)
    e_t = 0.0
    for i, c in enumerate(labels.tolist()):
        logits = [20.0 * float(pooled[i] @ ev_prompts[k] / (pooled[i].norm() * ev_prompts[k].norm())) for k in range(6)]
        e_t += -(logits[c] - math.log(sum(math.exp(x) for x in logits))) / len(labels)
    assert float(out.event_text_loss) == pytest.approx(e_t, rel=1e-5)
    assert float(out.loss) == pytest.approx(e_i + 0.5 * e_t, rel=1e-5)
    # zero-shot goes through the text head
    torch.testing.assert_close(model.zero_shot_classify(ev, CLASSES).logits, out.logits_per_event)
    model.save_pretrained(tmp_path / "tok")
    loaded = AutoModel.from_pretrained(tmp_path / "tok")
    with torch.no_grad():
        torch.testing.assert_close(loaded(ev).aligned_features, out.aligned_features, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"token mode expects patch tokens \[B, N, 24\]"):
        model(torch.randn(2, 24))
    with pytest.raises(ValueError, match=r"target_features has shape \(5, 2, 20\)"):
        model(ev, img[:, :2])
    with pytest.raises(ValueError, match="image_features"):
        TripleModalAlignmentConfig(image_features="pooled")


def test_word_level_tokenizer_wraps_with_bos_eos():
    tok = build_word_level_tokenizer(["a photo of a car."])
    ids = tok("a photo of a truck.")["input_ids"]
    vocab = tok.get_vocab()
    expected = [vocab["[BOS]"], vocab["a"], vocab["photo"], vocab["of"], vocab["a"], vocab["[UNK]"], vocab["."],
                vocab["[EOS]"]]
    assert ids == expected


@pytest.mark.slow
def test_remote_code_load_without_package(tower, tmp_path):
    """The bundled module files alone (modeling_evalign blocked) load the model and zero-shot agrees."""
    import json
    import subprocess
    import sys

    model = _model(tower)
    model.save_pretrained(tmp_path / "ckpt")
    x = torch.randn(3, 24)
    expected = model.zero_shot_classify(x, CLASSES).probabilities
    torch.save({"x": x}, tmp_path / "x.pt")
    code = without_package(f"""
        import json, sys
        import torch
        from transformers import AutoModel
        m = AutoModel.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True)
        p = m.zero_shot_classify(torch.load({str(tmp_path / "x.pt")!r})["x"], {CLASSES!r}).probabilities
        print(json.dumps({{"module": type(m).__module__, "p": p.tolist()}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["module"].startswith("transformers_modules")
    torch.testing.assert_close(torch.tensor(got["p"]), expected, rtol=1e-5, atol=1e-6)
