"""The EventGPT integration example runs end to end and alignment raises the measured acceptance."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "eventgpt_integration.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("eventgpt_integration", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.mark.slow
def test_main_aligned_acceptance_beats_unaligned(example, tmp_path, capsys):
    from transformers import AutoModel

    from modeling_evalign.lightweight.configuration_lightweight import LightweightAlignmentConfig
    from modeling_evalign.lightweight.modeling_lightweight import LightweightAlignmentModule

    ckpt, out_json = tmp_path / "adapter", tmp_path / "result.json"
    argv = ["--num-eval", "4", "--max-new-tokens", "12", "--checkpoint-dir", str(ckpt), "--json", str(out_json)]
    result = example.main(argv)
    aligned, unaligned, oracle = (result.conditions[k] for k in ("aligned", "unaligned", "oracle"))
    assert aligned.alpha >= unaligned.alpha and aligned.alpha > 0.1
    assert aligned.tokens_per_target_call >= unaligned.tokens_per_target_call
    assert aligned.modality_gap < unaligned.modality_gap
    # oracle prefix = the target's own features: closed-form values of the feature-level numbers
    assert oracle.feature_agreement == 1.0 and oracle.modality_gap == pytest.approx(0.0, abs=1e-6)
    for c in result.conditions.values():  # every round emits accepted + 1 tokens (no EOS here)
        assert c.tokens_per_target_call == pytest.approx(c.tau + 1.0)
    assert result.eval_mse_aligned < 0.2  # target tokens have unit variance
    assert "aligned" in capsys.readouterr().out
    assert json.loads(out_json.read_text())["conditions"]["aligned"]["alpha"] == pytest.approx(aligned.alpha)

    # the saved checkpoint reloads through AutoModel and equals a fresh fit on the same data
    config = json.loads((ckpt / "config.json").read_text())
    assert "AutoModel" in config["auto_map"]
    event, target = example.make_pairs(256 + 4, 32, 32, 0.05, 0)
    fresh = LightweightAlignmentModule(LightweightAlignmentConfig(
        event_dim=32, target_dim=32, source_grid=[6, 6], target_grid=[4, 4], keep_cls_token=False,
    ))
    fresh.fit_closed_form(event[:256], target[:256])
    loaded = AutoModel.from_pretrained(ckpt, trust_remote_code=True).eval()
    with torch.no_grad():
        got = loaded(event_features=event[256:]).aligned_features
        want = fresh(event_features=event[256:]).aligned_features
    torch.testing.assert_close(got, want)
    assert float(((got - target[256:]) ** 2).mean()) == pytest.approx(result.eval_mse_aligned, rel=1e-5)


def test_unaligned_tokens_pad_and_truncate(example):
    event = torch.randn(2, 37, 20)
    padded = example.unaligned_tokens(event, 32)
    assert padded.shape == (2, 16, 32) and torch.all(padded[..., 20:] == 0)
    assert example.unaligned_tokens(torch.randn(2, 37, 40), 32).shape == (2, 16, 32)


def test_bad_arguments_exit(example):
    with pytest.raises(SystemExit):
        example.main(["--gamma", "0"])
