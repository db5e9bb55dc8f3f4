"""Saved checkpoints load with trust_remote_code in a fresh process where modeling_evalign cannot be imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from package_blocker import without_package
from safetensors.torch import save_file

from modeling_evalign.contrastive.configuration_contrastive import ContrastiveAlignmentConfig
from modeling_evalign.contrastive.modeling_contrastive import ContrastiveAlignmentModule
from modeling_evalign.lightweight.configuration_lightweight import LightweightAlignmentConfig
from modeling_evalign.lightweight.modeling_lightweight import LightweightAlignmentModule

REPO = Path(__file__).resolve().parent.parent

SCRIPT = without_package(r"""
import json, os, sys
try:
    import modeling_evalign  # noqa: F401
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("modeling_evalign is still importable")

import torch
from safetensors.torch import load_file
from transformers import AutoModel

for name in sys.argv[2:]:
    folder = os.path.join(os.environ["EVALIGN_CKPTS"], name)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    data = load_file(os.path.join(folder, "expected.safetensors"))
    with torch.no_grad():
        out = model(event_features=data["event"], target_features=data["target"])
    assert torch.equal(out.aligned_features, data["aligned"]), name
    assert torch.equal(out.loss, data["loss"]), name
    print("OK", name, type(model).__name__)
assert not any(m == "modeling_evalign" or m.startswith("modeling_evalign.") for m in sys.modules)
""")


def _save(model, folder: Path, event: torch.Tensor, target: torch.Tensor) -> None:
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            t.add_(torch.rand_like(t))
    model.eval().save_pretrained(folder)
    with torch.no_grad():
        out = model(event_features=event, target_features=target)
    save_file({"event": event, "target": target, "aligned": out.aligned_features, "loss": out.loss},
              str(folder / "expected.safetensors"))


@pytest.mark.slow
def test_trust_remote_code_without_the_package(tmp_path):
    ckpts = tmp_path / "ckpts"
    light = LightweightAlignmentModule(LightweightAlignmentConfig(
        event_dim=6, target_dim=4, adapter_type="mlp", hidden_dim=3, use_whitening=True,
        source_grid=[3, 3], target_grid=[2, 2], keep_cls_token=False, cosine_weight=0.3))
    light.fit_whitening(torch.randn(8, 10, 6))
    _save(light, ckpts / "lightweight", torch.randn(2, 10, 6), torch.randn(2, 4, 4))
    contrastive = ContrastiveAlignmentModule(ContrastiveAlignmentConfig(
        event_dim=6, target_dim=4, projection_type="mlp", hidden_dim=5, use_target_head=True, mse_weight=0.5))
    _save(contrastive, ckpts / "contrastive", torch.randn(5, 6), torch.randn(5, 4))
    config = json.loads((ckpts / "lightweight" / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_lightweight.LightweightAlignmentModel"

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_MODULES_CACHE=str(tmp_path / "hf_modules"),
               HF_HUB_OFFLINE="1", EVALIGN_CKPTS=str(ckpts))
    script = tmp_path / "load.py"
    script.write_text(SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(REPO), "lightweight", "contrastive"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK lightweight LightweightAlignmentModel" in proc.stdout
    assert "OK contrastive ContrastiveAlignmentModel" in proc.stdout
