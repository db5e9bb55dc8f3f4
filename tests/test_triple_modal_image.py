"""Image-level triple-modal strategy: LoRA vision tower vs images and class prompts (frozen CLIP text tower)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer, CLIPModel, CLIPTextModelWithProjection

from modeling_evalign.features.tiny_models import tiny_clip_config
from modeling_evalign.training.config import TrainConfig
from modeling_evalign.training.data import ImagePairDataset, TrainData
from modeling_evalign.training.loop import train
from modeling_evalign.triple_modal.configuration_triple_modal_image import TripleModalImageAlignmentConfig
from modeling_evalign.triple_modal.modeling_triple_modal_image import TripleModalImageAlignmentModel
from modeling_evalign.triple_modal.text_tower import build_word_level_tokenizer

CLASSES = ["car", "dog", "tree"]
LORA_R = 4
IMAGE_SIZE = 32
LORA_NAME = re.compile(r"event_encoder\.base_model\.model\.vision_model\.encoder\.layers\.\d+\.self_attn\."
                       r"(q_proj|v_proj)\.lora_(A|B)\.default\.weight")


def _save_tiny_clip(path, class_names):
    """A tiny full CLIP checkpoint (both towers) with a word-level tokenizer over every prompt of the classes."""
    defaults = TripleModalImageAlignmentConfig(clip_model_name_or_path="unused")
    texts = [t.format(c) for c in class_names for t in (defaults.event_prompt_template, defaults.image_prompt_template)]
    tokenizer = build_word_level_tokenizer(texts)
    config = tiny_clip_config(image_size=IMAGE_SIZE, hidden_size=32, num_heads=2, projection_dim=16)
    # the text tower pools at the EOS token: its id must be the tokenizer's
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        setattr(config.text_config, name, getattr(tokenizer, name))
    torch.manual_seed(3)
    CLIPModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return _save_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip", CLASSES)


def _model(clip_dir, **kw) -> TripleModalImageAlignmentModel:
    kw = {"clip_model_name_or_path": str(clip_dir), "lora_r": LORA_R, "lora_alpha": 8, "class_names": CLASSES, **kw}
    return TripleModalImageAlignmentModel(TripleModalImageAlignmentConfig(**kw))


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))


def _cross_entropy64(logits: torch.Tensor, labels: list[int]) -> float:
    """Mean of ``log(sum_j exp(l_ij)) - l_i,label_i`` by an explicit loop in float64."""
    total = 0.0
    for row, label in zip(logits.tolist(), labels):
        top = max(row)
        total += top + math.log(sum(math.exp(v - top) for v in row)) - row[label]
    return total / len(labels)


def test_loss_terms_equal_a_float64_hand_computation(clip_dir):
    model = _model(clip_dir, event_text_weight=0.7, image_text_weight=0.3, max_logit_scale=20.0).eval()
    with torch.no_grad():  # non-zero LoRA, and a logit scale above the cap (the loss must use the clamped 20)
        for name, p in model.event_encoder.named_parameters():
            if "lora_B" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))))
        model.logit_scale.fill_(math.log(30.0))
    x, y, labels = _images(4, 0), _images(4, 1), torch.tensor([2, 0, 1, 0])
    with torch.no_grad():
        out = model(event_pixel_values=x, pixel_values=y, labels=labels)
        # independent float64 recomputation: merged LoRA tower, the CLIP towers and tokenizer loaded directly
        ev = model.merged_event_encoder().double()(pixel_values=x.double()).image_embeds
        clip = CLIPModel.from_pretrained(clip_dir).double().eval()
        tg = clip.get_image_features(pixel_values=y.double())
        tg = getattr(tg, "pooler_output", tg)
        text = CLIPTextModelWithProjection.from_pretrained(clip_dir).double().eval()
        tok = AutoTokenizer.from_pretrained(clip_dir)

        def prompts(template):
            batch = tok([template.format(c) for c in CLASSES], padding=True, return_tensors="pt")
            return text(**batch).text_embeds

        cfg = model.config
        image_prompts, event_prompts = prompts(cfg.image_prompt_template), prompts(cfg.event_prompt_template)

    def cos(a, b):
        return torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T

    scale, lab = 20.0, labels.tolist()
    pair = scale * cos(ev, tg)
    info_nce = (_cross_entropy64(pair, [0, 1, 2, 3]) + _cross_entropy64(pair.T, [0, 1, 2, 3])) / 2
    event_text = _cross_entropy64(scale * cos(ev, event_prompts), lab)
    image_text = _cross_entropy64(scale * cos(tg, image_prompts), lab)
    assert out.logit_scale.item() == pytest.approx(scale)
    assert out.contrastive_loss.item() == pytest.approx(info_nce, rel=1e-4)
    assert out.event_text_loss.item() == pytest.approx(event_text, rel=1e-4)
    assert out.image_text_loss.item() == pytest.approx(image_text, rel=1e-4)
    assert out.loss.item() == pytest.approx(info_nce + 0.7 * event_text + 0.3 * image_text, rel=1e-4)
    torch.testing.assert_close(out.logits_per_class.double(), scale * cos(ev, event_prompts), rtol=1e-4, atol=1e-4)
    assert event_text != pytest.approx(image_text, rel=1e-3)  # the two prompt sets are really different
    # without pixel_values only the event-text term remains
    with torch.no_grad():
        only_text = model(event_pixel_values=x, labels=labels)
    assert only_text.loss.item() == pytest.approx(0.7 * event_text, rel=1e-4) and only_text.image_text_loss is None
    zero_shot = model.zero_shot_classify(x)
    torch.testing.assert_close(zero_shot.logits.double(), scale * cos(ev, event_prompts), rtol=1e-4, atol=1e-4)
    assert zero_shot.labels.tolist() == (scale * cos(ev, event_prompts)).argmax(-1).tolist()


def _step(model, lr=1e-2):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    out = model(event_pixel_values=_images(6, 4), pixel_values=_images(6, 5), labels=torch.tensor([0, 1, 2, 0, 1, 2]))
    out.loss.backward()
    opt.step()
    return out


def test_only_vision_lora_and_scale_train_and_frozen_towers_stay_bitwise(clip_dir):
    model = _model(clip_dir)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable - {"logit_scale"} and all(LORA_NAME.fullmatch(n) for n in trainable - {"logit_scale"})
    assert "logit_scale" in trainable
    text_model, _ = model.text_tower()
    text_before = {k: v.clone() for k, v in text_model.state_dict().items()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _step(model)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed <= trainable and "logit_scale" in changed and any(".lora_B." in k for k in changed)
    assert all(torch.equal(text_before[k], v) for k, v in text_model.state_dict().items())
    assert all(p.grad is None for p in text_model.parameters())
    assert all(p.grad is None for p in model.target_encoder.parameters())
    assert not any("text" in k for k in model.state_dict())  # the text tower is outside the module tree
    assert model.target_encoder.training is False and text_model.training is False


def test_save_load_round_trip_holds_no_tower_weights(clip_dir, tmp_path):
    model = _model(clip_dir)
    _step(model)
    model.eval()
    x = _images(3, 7)
    with torch.no_grad():
        expected = model(event_pixel_values=x).aligned_features
    expected_logits = model.zero_shot_classify(x).logits
    model.save_pretrained(tmp_path / "ckpt")
    saved = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    assert set(saved) == set(model.trainable_state_dict())
    assert not any("text" in k or k.startswith("target_encoder") for k in saved)
    for loaded in (TripleModalImageAlignmentModel.from_pretrained(tmp_path / "ckpt"),
                   AutoModel.from_pretrained(tmp_path / "ckpt", trust_remote_code=True)):
        assert loaded.config.class_names == CLASSES and loaded.config.text_model_name_or_path == str(clip_dir)
        with torch.no_grad():
            assert torch.equal(loaded(event_pixel_values=x).aligned_features, expected)
        torch.testing.assert_close(loaded.zero_shot_classify(x).logits, expected_logits, rtol=0, atol=1e-6)


def test_bad_input_raises(clip_dir):
    for kw, field in ((dict(event_prompt_template="no slot"), "event_prompt_template"),
                      (dict(image_text_weight=-1.0), "image_text_weight"),
                      (dict(class_names=["a", "a"]), "class_names")):
        with pytest.raises(ValueError, match=field):
            TripleModalImageAlignmentConfig(clip_model_name_or_path=str(clip_dir), **kw)
    cfg = TripleModalImageAlignmentConfig(clip_model_name_or_path=str(clip_dir), clip_revision="v1")
    assert (cfg.text_model_name_or_path, cfg.text_revision) == (str(clip_dir), "v1")  # defaults to the CLIP repo
    model = _model(clip_dir)
    x = _images(2, 0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        model(event_pixel_values=x, pixel_values=x, labels=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="int64 of shape"):
        model(event_pixel_values=x, labels=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="class_names is empty"):
        _model(clip_dir, class_names=None)(event_pixel_values=x, labels=torch.tensor([0, 1]))
    wrong = CLIPTextModelWithProjection(CLIPModel.from_pretrained(clip_dir).config.text_config.__class__(projection_dim=8))
    with pytest.raises(ValueError, match="projection_dim=8"):
        model.set_text_tower(wrong, None)


class _Rows:
    """The members of a ``datasets.Dataset`` that ImagePairDataset uses (rows by index, columns by name)."""

    def __init__(self, columns: dict[str, list]):
        self.columns = columns
        self.column_names = list(columns)

    def __len__(self):
        return len(next(iter(self.columns.values())))

    def __getitem__(self, key):
        if isinstance(key, str):
            return self.columns[key]
        return {k: v[key] for k, v in self.columns.items()}


def _class_rows(n: int, seed: int) -> _Rows:
    """Histogram/RGB pairs whose content depends on the scene: a per-class colour pattern plus noise."""
    rng = np.random.default_rng(seed)
    patterns = np.random.default_rng(99).random((len(CLASSES), 2, IMAGE_SIZE, IMAGE_SIZE, 3))
    scenes = [CLASSES[(i + seed) % len(CLASSES)] for i in range(n)]  # unsorted order: names must come out sorted
    hist, rgb = [], []
    for scene in scenes:
        c = CLASSES.index(scene)
        hist.append(np.clip(patterns[c, 0] + 0.1 * rng.standard_normal(patterns[c, 0].shape), 0, 1).astype(np.float32))
        rgb.append(np.clip(255 * patterns[c, 1] + 20 * rng.standard_normal(patterns[c, 1].shape), 0, 255).astype(np.uint8))
    from PIL import Image

    return _Rows({"event_histogram": hist, "rgb": [Image.fromarray(a) for a in rgb], "scene": scenes})


def test_trains_through_the_loop_and_zero_shot_beats_chance(clip_dir, tmp_path):
    rows = _class_rows(12, seed=1)
    data = TrainData(ImagePairDataset(rows, "event_histogram", "rgb", IMAGE_SIZE), None, {"type": "test"})
    config = TrainConfig(strategy="triple_modal_image", clip_model=str(clip_dir), lora_r=LORA_R, lora_alpha=8,
                         dsec_data_dir=str(tmp_path), durations=["1s"], output_dir=str(tmp_path / "out"),
                         num_epochs=8, batch_size=6, learning_rate=2e-2, cpu=True, checkpointing_steps=100)
    result = train(config, data=data)
    assert len(result.losses) == 16 and sum(result.losses[-4:]) < sum(result.losses[:4])  # noisy: 4-step means
    final = result.output_dir / "final"
    assert (final / "adapter" / "adapter_config.json").is_file()
    assert not any("text" in k for k in load_file(str(final / "model.safetensors")))
    # config.json names the local tower by its directory name only (no machine path): re-attach it here
    model = TripleModalImageAlignmentModel.from_pretrained(final, clip_model_name_or_path=str(clip_dir),
                                                           text_model_name_or_path=str(clip_dir))
    assert model.config.class_names == CLASSES  # sorted names of the scene column
    pixels = torch.stack([data.train[i]["event_pixel_values"] for i in range(len(rows))])
    truth = torch.tensor([CLASSES.index(s) for s in rows["scene"]])
    accuracy = (model.zero_shot_classify(pixels).labels == truth).float().mean().item()
    assert accuracy > 0.6  # chance is 1/3 (the untrained model predicts one class for all: 1/3 here)
    # a run killed at step 5 resumes to the same losses and weights (labels and prompts rebuilt on resume)
    resume = {**config.to_dict(), "output_dir": str(tmp_path / "part")}
    assert train(TrainConfig(**{**resume, "stop_at_step": 5}), data=data).interrupted
    resumed = train(TrainConfig(**{**resume, "resume_from_checkpoint": "latest"}), data=data)
    assert resumed.losses == result.losses
    a, b = load_file(str(final / "model.safetensors")), load_file(str(tmp_path / "part" / "final" / "model.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(KeyError, match="no column 'weather'"):
        train(TrainConfig(**{**config.to_dict(), "output_dir": str(tmp_path / "o2"), "label_key": "weather"}), data=data)


@pytest.mark.slow
def test_dsec_tree_end_to_end_with_scene_labels(tmp_path_factory, tmp_path):
    """run_egpt_dsec_alignment on the synthetic DSEC tree: labels from the builder's ``scene`` column."""
    import json

    from dsec_tree import synthetic_tree

    from modeling_evalign.events.scenes import PHOTOS
    from run_egpt_dsec_alignment import main

    tree = synthetic_tree(tmp_path_factory)
    clip = _save_tiny_clip(tmp_path / "clip", list(PHOTOS))
    argv = ["--strategy", "triple_modal_image", "--dsec_data_dir", str(tree), "--durations", "500ms",
            "--dsec_cache_dir", str(tmp_path / "cache"), "--clip_model", str(clip), "--lora_r", "2",
            "--num_epochs", "1", "--batch_size", "2", "--output_dir", str(tmp_path / "runs"), "--cpu"]
    assert main(argv) == 0
    final = tmp_path / "runs" / "500ms" / "final"
    info = json.loads((final / "training_info.json").read_text())
    scenes = sorted({p.name.split("_", 2)[2] for p in tree.iterdir() if p.name.startswith("synthetic_")})
    model = TripleModalImageAlignmentModel.from_pretrained(final, clip_model_name_or_path=str(clip),
                                                           text_model_name_or_path=str(clip))
    saved = json.loads((final / "config.json").read_text())
    assert saved["clip_model_id"] == saved["text_model_id"] == clip.name  # a name, no path
    assert info["model_type"] == "evalign_triple_modal_image" and info["global_steps"] >= 1
    assert set(model.config.class_names) <= set(scenes) and len(model.config.class_names) >= 2
    assert model.config.class_names == sorted(model.config.class_names)
    assert model.config.text_model_name_or_path == str(clip)


_BLOCKED_LOAD = """
import json
import torch
from transformers import AutoModel
model = AutoModel.from_pretrained(CKPT, trust_remote_code=True)
x = torch.load(INPUT)
expected = torch.load(EXPECTED)
logits = model.zero_shot_classify(x).logits
print(json.dumps({"module": type(model).__module__, "classes": model.config.class_names,
                  "close": bool(torch.allclose(logits, expected, rtol=0, atol=1e-5))}))
"""


@pytest.mark.slow
def test_trust_remote_code_without_the_package(clip_dir, tmp_path):
    """The checkpoint loads from its bundled module files alone and its zero-shot logits are unchanged."""

    from package_blocker import run_without_package

    model = _model(clip_dir)
    _step(model)
    model.eval()
    x = _images(2, 9)
    torch.save(x, tmp_path / "input.pt")
    torch.save(model.zero_shot_classify(x).logits, tmp_path / "expected.pt")
    model.save_pretrained(tmp_path / "ckpt")
    result = run_without_package(
        f"CKPT, INPUT, EXPECTED = {str(tmp_path / 'ckpt')!r}, {str(tmp_path / 'input.pt')!r}, "
        f"{str(tmp_path / 'expected.pt')!r}\n" + _BLOCKED_LOAD,
        tmp_path,
    )
    assert result["close"] and result["classes"] == CLASSES
    assert result["module"].startswith("transformers_modules.")  # the bundled copy, not modeling_evalign
