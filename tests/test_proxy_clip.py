"""The proxy CLIP tower at a tiny size: a real HF CLIP directory, resume == uninterrupted, held-out zero-shot
above chance on a separable set, ensure_proxy_clip builds once and reuses."""

from __future__ import annotations

import json

import pytest
import torch

from modeling_evalign.features import proxy_clip as pc
from modeling_evalign.features.proxy_clip import (
    ProxyClipConfig,
    build_proxy_clip,
    ensure_proxy_clip,
    proxy_clip_dir,
)
from modeling_evalign.features.proxy_clip_data import caption, render_frames

# photographs of very different colour and texture: separable by a tiny tower in a few dozen steps
SEPARABLE = ["coffee", "grass", "moon"]


def _tiny(**kw) -> ProxyClipConfig:
    base = dict(photos=SEPARABLE, image_size=16, patch_size=8, hidden_size=32, intermediate_size=64, vision_layers=1,
                text_layers=1, num_heads=2, projection_dim=16, train_sequences_per_photo=2, test_sequences_per_photo=1,
                frames_per_sequence=4, render_size=(22, 16), steps=6, batch_size=8, warmup_steps=2,
                checkpoint_every=3, learning_rate=3e-3)
    base.update(kw)
    return ProxyClipConfig(**base)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny matmuls run far faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def built(tmp_path_factory, _one_thread):
    return build_proxy_clip(tmp_path_factory.mktemp("proxy") / "tower", _tiny(), progress=False)


def test_saved_directory_loads_like_openai_clip(built):
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer, CLIPVisionModel

    model = CLIPModel.from_pretrained(built).eval()
    vision = CLIPVisionModel.from_pretrained(built).eval()
    ref = model.vision_model.state_dict()
    got = vision.state_dict()
    assert got.keys() == ref.keys()
    for name, p in got.items():
        assert torch.equal(p, ref[name]), name
    tok = CLIPTokenizer.from_pretrained(built)
    text = "a photo of the grass, camera moving left, close-up"
    ids = tok([text]).input_ids[0]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id == model.config.text_config.eos_token_id
    assert tok.unk_token_id not in ids[1:-1]  # every caption word is in the learnt vocabulary
    proc = CLIPImageProcessor.from_pretrained(built)
    frame = (torch.rand(30, 40, 3) * 255).to(torch.uint8).numpy()
    assert proc(images=[frame], return_tensors="pt").pixel_values.shape == (1, 3, 16, 16)
    # the card shows the numbers of proxy_clip.json
    info = json.loads((built / pc.INFO_FILE).read_text())
    card = (built / "README.md").read_text()
    acc = info["metrics"]["zero_shot/accuracy"]
    assert f"| zero-shot accuracy | {100 * acc:.1f} | {100 / 3:.1f} |" in card
    assert "model-index" in card
    assert "path/to" not in card and "ensure_proxy_clip()" in card  # a runnable snippet, no placeholder


def test_retrieval_chance_levels_match_their_definition(built):
    info = json.loads((built / pc.INFO_FILE).read_text())
    cfg = ProxyClipConfig(**info["config"])
    test = render_frames(cfg.photos, "test", cfg.test_sequences_per_photo, cfg.frames_per_sequence,
                         cfg.render_size, cfg.seed)
    own = [caption(info["class_labels"][c], p) for c, p in zip(test.labels.tolist(), test.parts)]
    distinct = sorted(set(own))
    m = info["metrics"]
    assert m["num_captions"] == len(distinct)
    assert m["i2t/R@1/chance"] == pytest.approx(1 / len(distinct))
    # one random frame per caption hits with probability count/n
    assert m["t2i/R@1/chance"] == pytest.approx(sum(own.count(c) / len(own) for c in distinct) / len(distinct))


def test_resume_after_kill_equals_uninterrupted(tmp_path, built):
    from safetensors.torch import load_file

    dest = tmp_path / "tower"
    with pytest.raises(RuntimeError, match="stopped after step 3"):
        build_proxy_clip(dest, _tiny(), progress=False, _stop_after_steps=3)
    assert not dest.exists() and (tmp_path / ".tower.work" / "checkpoint.pt").is_file()
    build_proxy_clip(dest, _tiny(), progress=False)
    assert not (tmp_path / ".tower.work").exists()
    a, b = load_file(dest / "model.safetensors"), load_file(built / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_zero_shot_beats_chance_on_separable_photographs(tmp_path):
    path = build_proxy_clip(tmp_path / "t", _tiny(steps=40, checkpoint_every=40), progress=False)
    m = json.loads((path / pc.INFO_FILE).read_text())["metrics"]
    assert m["zero_shot/chance"] == pytest.approx(1 / 3)
    assert m["zero_shot/accuracy"] >= 2 * m["zero_shot/chance"]


def test_ensure_builds_once_then_reuses(tmp_path, monkeypatch):
    cfg = _tiny(steps=2, checkpoint_every=2)
    calls = []
    real = pc.build_proxy_clip

    def counting(*a, **kw):
        calls.append(a)
        return real(*a, **kw)

    monkeypatch.setattr(pc, "build_proxy_clip", counting)
    first = ensure_proxy_clip(tmp_path, cfg, progress=False, log=None)
    assert first == proxy_clip_dir(cfg, tmp_path) and first.name == f"proxy_clip-{cfg.fingerprint()}"
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    second = ensure_proxy_clip(tmp_path, _tiny(steps=2, checkpoint_every=2), progress=False, log=None)
    assert second == first and len(calls) == 1
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    # the cache root comes from EVALIGN_HOME when no cache_dir is given
    monkeypatch.setenv("EVALIGN_HOME", str(tmp_path))
    assert ensure_proxy_clip(config=cfg, log=None) == first and len(calls) == 1


def test_fingerprint_and_config_checks():
    assert _tiny().fingerprint() == _tiny().fingerprint()
    assert _tiny(seed=1).fingerprint() != _tiny().fingerprint()
    with pytest.raises(ValueError, match="patch_size"):
        _tiny(image_size=20)
    with pytest.raises(ValueError, match="photos"):
        _tiny(photos=["coffee", "not_a_photo"])


def test_script_rejects_bad_flags(capsys):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "dataset_scripts" / "pretrain_proxy_clip.py"
    spec = importlib.util.spec_from_file_location("pretrain_proxy_clip", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(SystemExit) as err:
        mod.main(["--steps", "many"])
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--steps" in lines[0]
