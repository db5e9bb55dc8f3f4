"""The proxy VLM at a tiny size: target and draft load as VideoLlava directories, the cached-feature training path
equals VideoLlava's own pixel path, builds are deterministic and resume exactly, the card shows proxy_vlm.json's
numbers, the fingerprint follows the config and the tower, and the CLI reports bad input in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from modeling_evalign.downstream import proxy_vlm as pv
from modeling_evalign.downstream.proxy_vlm import (
    ProxyVlmConfig,
    build_proxy_vlm,
    ensure_proxy_vlm,
    proxy_vlm_dir,
)
from modeling_evalign.features.proxy_clip import ProxyClipConfig, build_proxy_clip

ROOT = Path(__file__).resolve().parents[1]


def _tiny(**kw) -> ProxyVlmConfig:
    base = dict(photos=["coffee", "grass"], hidden_size=32, layers=2, intermediate_size=64, heads=2,
                draft_hidden_size=16, draft_layers=1, draft_intermediate_size=32, draft_heads=2,
                train_sequences_per_photo=2, test_sequences_per_photo=1, seconds=1.5, render_size=(22, 16),
                durations=(0.2, 0.5), eval_durations=(0.2, 1.0), train_windows=40, steps=4, draft_steps=2,
                batch_size=6, warmup_steps=1, checkpoint_every=2, max_new_tokens=30)
    base.update(kw)
    return ProxyVlmConfig(**base)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tower(tmp_path_factory, _one_thread):
    cfg = ProxyClipConfig(photos=["coffee", "grass"], image_size=16, patch_size=8, hidden_size=16,
                          intermediate_size=32, vision_layers=2, text_layers=1, num_heads=2, projection_dim=8,
                          train_sequences_per_photo=1, test_sequences_per_photo=1, frames_per_sequence=2,
                          render_size=(22, 16), steps=1, batch_size=4, warmup_steps=1, checkpoint_every=1)
    return build_proxy_clip(tmp_path_factory.mktemp("tower") / "clip", cfg, progress=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory, tower):
    return ensure_proxy_vlm(tower, tmp_path_factory.mktemp("vlm"), _tiny(), progress=False, log=None)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: load_file(path / k / "model.safetensors") for k in ("target", "draft")}


def _assert_same(a, b):
    for k in a:
        assert a[k].keys() == b[k].keys()
        for name in a[k]:
            assert torch.equal(a[k][name], b[k][name]), f"{k}: {name}"


def test_directories_load_and_features_path_equals_pixel_path(built, tower):
    from transformers import AutoTokenizer, CLIPVisionModel, VideoLlavaForConditionalGeneration

    from modeling_evalign.downstream.prompts import encode_prompt
    from modeling_evalign.downstream.proxy_vlm_data import tower_tokens
    from modeling_evalign.downstream.proxy_vlm_train import embed_visual
    from modeling_evalign.downstream.questions import QUESTIONS
    from modeling_evalign.features.clip_preprocessing import clip_preprocess_tensor

    target = VideoLlavaForConditionalGeneration.from_pretrained(built / "target").eval()
    draft = VideoLlavaForConditionalGeneration.from_pretrained(built / "draft").eval()
    tok = AutoTokenizer.from_pretrained(built / "target")
    tower_ref = CLIPVisionModel.from_pretrained(tower).eval()
    for model in (target, draft):  # both towers hold the tower's weights
        for sub in (model.model.image_tower, model.model.video_tower):
            for name, p in tower_ref.state_dict().items():
                assert torch.equal(sub.state_dict()[name], p), name
    cfg = target.config
    patches = (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2
    assert (cfg.image_seq_length, cfg.video_seq_length) == (patches, 5 * (patches + 1))
    assert draft.config.text_config.num_hidden_layers < target.config.text_config.num_hidden_layers
    # prompt token counts equal the visual token counts
    ids = encode_prompt(tok, QUESTIONS["motion"], "video", cfg.video_seq_length)
    assert int((ids == cfg.video_token_index).sum()) == cfg.video_seq_length
    # VideoLlava's own forward on pixels == the cached tower features projected and scattered (the training path)
    frames = (torch.rand(1, 5, 3, 16, 22) * 255).to(torch.uint8)
    pixels = clip_preprocess_tensor(frames[0].float() / 255.0, cfg.vision_config.image_size)[None]
    with torch.no_grad():
        ref = target(input_ids=ids, pixel_values_videos=pixels).logits
        feats = tower_tokens(tower_ref, frames, cfg.vision_config.image_size)  # [1, 5, 1 + P, D]
        ours = target(inputs_embeds=embed_visual(target, ids, feats.flatten(1, 2), cfg.video_token_index)).logits
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_card_shows_the_metrics_and_chance(built):
    info = json.loads((built / pv.INFO_FILE).read_text())
    card = (built / "README.md").read_text()
    m = info["metrics"]
    assert set(m["target"]) == {"0.2s", "1s"}
    per = m["target"]["1s"]
    for qtype in ("scene", "overall"):
        row = (f"| 1s | {qtype} | {per['video']['n'].get(qtype, sum(per['video']['n'].values()))} | "
               f"{100 * per['video'][qtype]:.1f} | {100 * per['image'][qtype]:.1f} | "
               f"{100 * m['draft']['1s']['video'][qtype]:.1f} |")
        assert row in card, row
    assert m["chance"]["scene"] == 0.5 and m["chance"]["motion"] == 0.25
    assert f"| {100 * m['chance']['scene']:.1f} | {100 * m['majority']['1s']['scene']:.1f} |" in card
    # majority = the most frequent answer's share, recomputed from the held-out windows
    from modeling_evalign.downstream.proxy_vlm_data import grid_windows, render_sequences

    cfg = ProxyVlmConfig(**info["config"])
    seqs = render_sequences(cfg.photos, "test", cfg.test_sequences_per_photo, cfg.seconds, cfg.frame_rate_hz,
                            tuple(cfg.render_size), cfg.seed)
    scenes = [w.answer for w in grid_windows(seqs, 1.0, cfg.num_frames, stride=max(1.0, cfg.eval_stride))
              if w.qtype == "scene"]
    assert m["majority"]["1s"]["scene"] == max(scenes.count(a) for a in set(scenes)) / len(scenes)
    assert f"| 1s | {100 * m['draft']['1s']['agreement']:.1f} | {100 * m['draft']['1s']['token_agreement']:.1f} |" in card
    assert "model-index" in card and info["fingerprint"] in built.name


def test_deterministic_and_resumable(built, tower, tmp_path):
    again = build_proxy_vlm(tmp_path / "again", tower, _tiny(), progress=False)
    _assert_same(_weights(built), _weights(again))
    dest = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="test hook"):
        build_proxy_vlm(dest, tower, _tiny(), progress=False, _stop_after_steps=2)
    assert not dest.exists() and (tmp_path / ".resumed.work" / "target-checkpoint.pt").is_file()
    build_proxy_vlm(dest, tower, _tiny(), progress=False)
    _assert_same(_weights(built), _weights(dest))
    assert not (tmp_path / ".resumed.work").exists()


def test_fingerprint_follows_config_and_tower(built, tower, tmp_path):
    assert proxy_vlm_dir(tower, _tiny(), built.parent) == built
    assert ensure_proxy_vlm(tower, built.parent, _tiny(), progress=False, log=None) == built  # reused
    assert _tiny(steps=5).fingerprint(tower) != _tiny().fingerprint(tower)
    other = tmp_path / "other"
    shutil.copytree(tower, other)
    from safetensors.torch import load_file, save_file

    state = load_file(other / "model.safetensors")
    key = next(k for k in state if k.endswith("post_layernorm.bias"))
    state[key] = state[key] + 1.0
    save_file(state, other / "model.safetensors", metadata={"format": "pt"})
    assert _tiny().fingerprint(other) != _tiny().fingerprint(tower)


def test_bad_config_and_cli_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="photos"):
        ProxyVlmConfig(photos=["coffee", "nope"])
    with pytest.raises(ValueError, match="hidden_size=100 is not a multiple of heads=3"):
        ProxyVlmConfig(hidden_size=100, heads=3)
    with pytest.raises(FileNotFoundError, match="config.json"):
        pv.tower_identity(tmp_path)
    import importlib.util

    from modeling_evalign.utils.cli import run_cli

    spec = importlib.util.spec_from_file_location("pretrain_proxy_vlm", ROOT / "dataset_scripts" / "pretrain_proxy_vlm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert run_cli(mod.main, ["--tower", str(tmp_path / "missing"), "--quiet"], prog="pretrain_proxy_vlm.py") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--tower" in lines[0] and "missing" in lines[0]
    with pytest.raises(SystemExit) as err:
        mod.main(["--steps", "many"])
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--steps" in lines[0]


def test_build_in_a_spawned_process(built, tower, tmp_path):
    """The main job builds the VLM in its own process while its stages run: the same weights as in-process, the
    build's error re-raised in the caller, and stop() kills a build without leaving a complete-looking directory."""
    import dataclasses
    from types import SimpleNamespace

    from modeling_evalign.downstream.stage import ProxyVlmBuild

    fields = dataclasses.asdict(_tiny())
    job = ProxyVlmBuild(SimpleNamespace(proxy_vlm=fields, proxy_cache_dir=str(tmp_path / "a")), str(tower), log=None)
    root = Path(job.result())
    assert root.name == built.name and root.parent == tmp_path / "a"
    _assert_same(_weights(built), _weights(root))

    missing = tmp_path / "no-tower"
    job = ProxyVlmBuild(SimpleNamespace(proxy_vlm=fields, proxy_cache_dir=str(tmp_path / "b")), str(missing), log=None)
    with pytest.raises(Exception, match="no-tower"):
        job.result()

    job = ProxyVlmBuild(SimpleNamespace(proxy_vlm=fields, proxy_cache_dir=str(tmp_path / "c")), str(tower), log=None)
    job.stop()
    assert not job._process.is_alive() and not list((tmp_path / "c").glob("proxy_vlm-*/README.md"))
    with pytest.raises(ValueError, match="photos"):  # a bad field fails before any process starts
        ProxyVlmBuild(SimpleNamespace(proxy_vlm={"photos": ["nope"]}, proxy_cache_dir=None), str(tower))
