"""CEIA image-level model: LoRA only on vision q/v, frozen target tower, adapter-only checkpoints, merged export."""

from __future__ import annotations

import re

import pytest
import torch
from package_blocker import run_without_package
from safetensors.torch import load_file
from transformers import AutoModel, CLIPModel, CLIPVisionModelWithProjection

from modeling_evalign.contrastive.configuration_contrastive_image import ContrastiveImageAlignmentConfig
from modeling_evalign.contrastive.modeling_contrastive_image import ContrastiveImageAlignmentModel
from modeling_evalign.features.tiny_models import tiny_clip_config
from modeling_evalign.training.config import TrainConfig
from modeling_evalign.training.data import PairDataset, TrainData, model_inputs
from modeling_evalign.training.loop import train

LORA_R = 4
NUM_LAYERS = 2
HIDDEN = 64


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("clip") / "tiny-clip"
    CLIPModel(tiny_clip_config(hidden_size=HIDDEN, num_layers=NUM_LAYERS)).save_pretrained(path)
    return path


def _model(clip_dir, **kw) -> ContrastiveImageAlignmentModel:
    cfg = ContrastiveImageAlignmentConfig(clip_model_name_or_path=str(clip_dir), lora_r=LORA_R, lora_alpha=8, **kw)
    return ContrastiveImageAlignmentModel(cfg)


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_lora_touches_only_vision_q_and_v(clip_dir):
    model = _model(clip_dir)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    pattern = re.compile(r"event_encoder\.base_model\.model\.vision_model\.encoder\.layers\.\d+\.self_attn\."
                         r"(q_proj|v_proj)\.lora_(A|B)\.default\.weight")
    lora = {n for n in trainable if n != "logit_scale"}
    assert all(pattern.fullmatch(n) for n in lora), sorted(lora)
    assert len(lora) == NUM_LAYERS * 2 * 2 and "logit_scale" in trainable
    assert sum(trainable.values()) == NUM_LAYERS * 2 * (LORA_R * HIDDEN * 2) + 1
    assert not any(p.requires_grad for p in model.target_encoder.parameters())
    # the same regex on a full CLIPModel (what real checkpoints are) leaves the text tower alone
    from peft import LoraConfig, get_peft_model

    from modeling_evalign.contrastive.modeling_contrastive_image import _lora_wrap

    full = _lora_wrap(CLIPModel(tiny_clip_config(hidden_size=HIDDEN, num_layers=NUM_LAYERS)),
                      LoraConfig(r=LORA_R, target_modules=model.config.lora_target_modules), get_peft_model)
    adapted = {n.rsplit(".lora_", 1)[0] for n, _ in full.named_parameters() if ".lora_" in n}
    assert adapted and all("vision_model" in n and n.endswith(("q_proj", "v_proj")) for n in adapted)
    assert len(adapted) == NUM_LAYERS * 2


def test_untrained_event_encoder_is_the_clip_tower(clip_dir):
    model = _model(clip_dir).eval()
    x = _images(3, 0)
    reference = CLIPVisionModelWithProjection.from_pretrained(clip_dir).eval()
    with torch.no_grad():
        out = model(event_pixel_values=x, pixel_values=x)
        expected = reference(pixel_values=x).image_embeds
    # LoRA B starts at zero and the towers were not re-initialised by post_init
    torch.testing.assert_close(out.aligned_features, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.target_embeddings, expected, rtol=0, atol=0)
    assert model.logit_scale.item() == pytest.approx(torch.log(torch.tensor(1 / 0.07)).item())


def test_patch_token_features_against_the_tower_and_a_float64_info_nce(clip_dir):
    model = _model(clip_dir, features="patch_tokens", token_layer=-2).eval()
    x, y = _images(3, 0), _images(3, 5)
    reference = CLIPVisionModelWithProjection.from_pretrained(clip_dir).eval()
    with torch.no_grad():
        out = model(event_pixel_values=x, pixel_values=y)
        ev = reference(pixel_values=x, output_hidden_states=True).hidden_states[-2][:, 1:]
        tg = reference(pixel_values=y, output_hidden_states=True).hidden_states[-2][:, 1:]
    assert out.aligned_features.shape == ev.shape  # [B, patches, hidden]: what EventGPT's projector takes
    torch.testing.assert_close(out.aligned_features, ev, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.target_embeddings, tg.flatten(1), rtol=0, atol=0)
    a = torch.nn.functional.normalize(ev.flatten(1).double(), dim=-1)
    b = torch.nn.functional.normalize(tg.flatten(1).double(), dim=-1)
    logits = (1 / 0.07) * a @ b.T
    target = torch.arange(3)
    expected = 0.5 * (torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.T, target))
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="features"):
        ContrastiveImageAlignmentConfig(features="cls")
    with pytest.raises(ValueError, match="token_layer"):
        ContrastiveImageAlignmentConfig(token_layer=0)


def _train_step(model, lr=1e-2):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    out = model(event_pixel_values=_images(4, 1), pixel_values=_images(4, 2))
    out.loss.backward()
    opt.step()
    return out


def test_training_step_changes_only_lora_and_scale(clip_dir):
    model = _model(clip_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _train_step(model)
    after = model.state_dict()
    trainable = set(model.trainable_state_dict())
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed <= trainable  # target tower and every non-LoRA event weight unchanged bitwise
    assert "logit_scale" in changed and any(".lora_B." in k for k in changed)
    assert all(p.grad is None for p in model.target_encoder.parameters())
    assert model.target_encoder.training is False  # stays in eval mode under model.train()


def test_save_load_adapter_and_merged_export(clip_dir, tmp_path):
    model = _model(clip_dir)
    _train_step(model)
    model.eval()
    x = _images(3, 5)
    with torch.no_grad():
        expected = model(event_pixel_values=x).aligned_features
    model.save_pretrained(tmp_path / "ckpt")
    saved = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    assert set(saved) == set(model.trainable_state_dict())  # adapter + scale only: no frozen CLIP weights
    assert not any(k.startswith("target_encoder") for k in saved)
    for loaded in (ContrastiveImageAlignmentModel.from_pretrained(tmp_path / "ckpt"),
                   AutoModel.from_pretrained(tmp_path / "ckpt", trust_remote_code=True)):
        with torch.no_grad():
            assert torch.equal(loaded(event_pixel_values=x).aligned_features, expected)
    # plain peft can load the adapter onto the original tower
    from peft import PeftModel

    model.save_adapter(tmp_path / "adapter")
    peft_model = PeftModel.from_pretrained(CLIPVisionModelWithProjection.from_pretrained(clip_dir), tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(peft_model.eval()(pixel_values=x).image_embeds, expected, rtol=0, atol=1e-6)
    model.export_merged(tmp_path / "merged")
    merged = CLIPVisionModelWithProjection.from_pretrained(tmp_path / "merged").eval()
    assert not any("lora" in k for k in merged.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(merged(pixel_values=x).image_embeds, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(KeyError, match="missing"):
        model.load_trainable_state_dict({"logit_scale": torch.tensor(1.0)})


def test_config_errors(clip_dir, tmp_path):
    for kw, field in ((dict(lora_r=0), "lora_r"), (dict(lora_target_modules="(q_proj"), "lora_target_modules"),
                      (dict(temperature=0.0), "temperature"), (dict(lora_dropout=1.0), "lora_dropout")):
        with pytest.raises(ValueError, match=field):
            ContrastiveImageAlignmentConfig(clip_model_name_or_path=str(clip_dir), **kw)
    with pytest.raises(ValueError, match="pixel_values"):
        _model(clip_dir)(event_pixel_values=torch.zeros(2, 32, 32))
    from modeling_evalign.lightweight.configuration_lightweight import LightweightAlignmentConfig

    LightweightAlignmentConfig(event_dim=4, target_dim=4).save_pretrained(tmp_path / "lw")
    with pytest.raises(ValueError, match="evalign_lightweight"):
        ContrastiveImageAlignmentConfig.from_pretrained(tmp_path / "lw")


def _image_config(clip_dir, tmp_path, **kw):
    base = dict(strategy="contrastive_image", clip_model=str(clip_dir), lora_r=LORA_R, lora_alpha=8,
                dsec_data_dir=str(tmp_path), durations=["1s"], output_dir=str(tmp_path / "out"), num_epochs=2,
                batch_size=8, learning_rate=1e-3, cpu=True, checkpointing_steps=100)
    base.update(kw)
    return TrainConfig(**base)


def test_image_strategy_trains_resumes_and_exports(clip_dir, tmp_path):
    names = model_inputs("contrastive_image")
    data = TrainData(PairDataset(_images(16, 10), _images(16, 11), names), PairDataset(_images(8, 12), _images(8, 13), names))
    full = train(_image_config(clip_dir, tmp_path, output_dir=str(tmp_path / "full"), export_merged=True), data=data)
    part = train(_image_config(clip_dir, tmp_path, stop_at_step=1), data=data)
    ckpt = part.checkpoint
    assert (ckpt / "adapter" / "adapter_config.json").is_file()
    assert set(load_file(str(ckpt / "model.safetensors"))) == {
        k for k in load_file(str(tmp_path / "full" / "final" / "model.safetensors"))}
    resumed = train(_image_config(clip_dir, tmp_path, resume_from_checkpoint="latest"), data=data)
    assert resumed.losses == full.losses and len(full.losses) == 4
    a = load_file(str(tmp_path / "full" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "out" / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "full" / "final" / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "full" / "merged" / "model.safetensors").is_file()
    assert not (tmp_path / "out" / "merged").exists()  # only on request
    assert "e2t/R@1" in full.val_metrics[-1]


_BLOCKED_LOAD = """
import json
import torch
from transformers import AutoModel
model = AutoModel.from_pretrained(CKPT, trust_remote_code=True)
x = torch.load(INPUT)
with torch.no_grad():
    y = model(event_pixel_values=x).aligned_features
print(json.dumps({"module": type(model).__module__, "equal": bool(torch.equal(y, torch.load(EXPECTED)))}))
"""


@pytest.mark.slow
def test_trust_remote_code_without_the_package(clip_dir, tmp_path):
    from pathlib import Path

    model = _model(clip_dir)
    _train_step(model)
    model.eval()
    x = _images(2, 9)
    with torch.no_grad():
        torch.save(model(event_pixel_values=x).aligned_features, tmp_path / "expected.pt")
    torch.save(x, tmp_path / "input.pt")
    model.save_pretrained(tmp_path / "ckpt")
    repo = str(Path(__file__).resolve().parents[1])
    result = run_without_package(
        f"REPO, CKPT = {repo!r}, {str(tmp_path / 'ckpt')!r}\n"
        f"INPUT, EXPECTED = {str(tmp_path / 'input.pt')!r}, {str(tmp_path / 'expected.pt')!r}\n" + _BLOCKED_LOAD,
        tmp_path,
    )
    assert result == {"module": result["module"], "equal": True}
    assert result["module"].startswith("transformers_modules.")  # the bundled copy, not modeling_evalign


def test_lora_wrapper_raises_no_future_warning(clip_dir):
    # peft 0.21.2 reads transformers' deprecated is_gradient_checkpointing in PeftModel.__init__; the suite
    # exempts that third-party-internal warning, so this checks the package's own construction directly
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        model = _model(clip_dir)
    assert not model.event_encoder.base_model.model.is_activation_checkpointing
