"""Legacy .pt checkpoints of the brief -> HF directories: written by a subprocess whose config classes this
process cannot import; outputs equal the legacy math recomputed here in float64; code-running pickles refused."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

# The brief's config classes (fields from its base.py / lightweight.py / contrastive.py), defined in a throwaway
# package the test process never sees. The writer builds state dicts with the legacy names and shapes.
_LEGACY_PACKAGE = '''
from dataclasses import dataclass

@dataclass
class AlignmentConfig:
    event_dim: int = 768
    target_dim: int = 1024
    hidden_dim: int = 512
    num_layers: int = 2
    dropout: float = 0.1
    temperature: float = 0.07
    use_layer_norm: bool = True
    freeze_event_encoder: bool = False
    freeze_target_encoder: bool = True

@dataclass
class LightweightAlignmentConfig(AlignmentConfig):
    num_layers: int = 2
    use_residual: bool = True
    use_whitening: bool = False
    finetune_on_downstream: bool = True
    adapter_type: str = "mlp"

@dataclass
class ContrastiveAlignmentConfig(AlignmentConfig):
    projection_dim: int = 256
    queue_size: int = 65536
    momentum: float = 0.999
    use_hard_negatives: bool = True
    hard_negative_weight: float = 0.5
    warmup_epochs: int = 5
    use_queue: bool = False
'''

_WRITER = '''
import sys, torch
from safetensors.torch import save_file
sys.path.insert(0, ROOT)
from feature_alignment.configs import LightweightAlignmentConfig, ContrastiveAlignmentConfig
torch.manual_seed(0)
r = lambda *s: torch.randn(*s) * 0.2

def mlp(prefix, d_in, d_out, h):  # Linear, LayerNorm, GELU, Dropout, Linear
    return {f"{prefix}.0.weight": r(h, d_in), f"{prefix}.0.bias": r(h), f"{prefix}.1.weight": 1 + r(h),
            f"{prefix}.1.bias": r(h), f"{prefix}.4.weight": r(d_out, h), f"{prefix}.4.bias": r(d_out)}

def head(prefix, d_in, d_out, h):  # Linear, BatchNorm1d, ReLU, Linear
    return {f"{prefix}.projection.0.weight": r(h, d_in), f"{prefix}.projection.0.bias": r(h),
            f"{prefix}.projection.1.weight": r(h), f"{prefix}.projection.1.bias": r(h),
            f"{prefix}.projection.1.running_mean": r(h), f"{prefix}.projection.1.running_var": 1 + r(h).abs(),
            f"{prefix}.projection.1.num_batches_tracked": torch.tensor(3), f"{prefix}.projection.3.weight": r(d_out, h),
            f"{prefix}.projection.3.bias": r(d_out)}

def make(kind):
    if kind == "lightweight":
        cfg = LightweightAlignmentConfig(event_dim=12, target_dim=10, hidden_dim=16, use_whitening=True)
        sd = mlp("adapter.mlp", 12, 10, 16)
        a = r(12, 12)
        sd.update({"whitening.running_mean": r(12), "whitening.running_cov": a @ a.T + 0.5 * torch.eye(12),
                   "whitening.num_batches_tracked": torch.tensor(7), "residual_proj.weight": r(10, 12),
                   "scale": torch.tensor([1.3])})
    else:  # the brief's 200 ms run: flattened 224x224x3 pixels on both sides
        d = 224 * 224 * 3
        cfg = ContrastiveAlignmentConfig(event_dim=d, target_dim=d, hidden_dim=8, projection_dim=4)
        sd = mlp("event_projector.mlp", d, d, 8)
        sd.update(head("event_projection_head", d, 4, 8))
        sd.update(head("target_projection_head", d, 4, 8))
        sd["logit_scale"] = torch.tensor(2.6592)
    return sd, {"model_state_dict": sd, "config": cfg, "training_stats": {"losses": [0.5, 0.25], "epochs": 2},
                "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}}

for name, kind, zip_format in (("lw_zip", "lightweight", True), ("lw_legacy", "lightweight", False),
                               ("contrastive", "contrastive", True)):
    sd, ckpt = make(kind)
    torch.save(ckpt, f"{OUT}/{name}.pt", _use_new_zipfile_serialization=zip_format)
    save_file({k: v.contiguous() for k, v in sd.items()}, f"{OUT}/{name}.ref.safetensors")

import os

class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + OUT + "/pwned",))

for zip_format in (True, False):
    torch.save({"model_state_dict": {}, "config": Evil()}, f"{OUT}/evil_{zip_format}.pt",
               _use_new_zipfile_serialization=zip_format)
'''


@pytest.fixture(scope="module")
def legacy(tmp_path_factory):
    """One subprocess writes every .pt (config classes from a throwaway package) and its reference weights."""
    root = tmp_path_factory.mktemp("legacy")
    pkg = root / "legacy_src" / "feature_alignment"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "configs.py").write_text(_LEGACY_PACKAGE)
    code = f"ROOT, OUT = {str(root / 'legacy_src')!r}, {str(root)!r}\n" + _WRITER
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (root / "pwned").exists()  # pickling Evil runs nothing; only unpickling it would
    with pytest.raises(ModuleNotFoundError):
        __import__("feature_alignment")  # this process cannot unpickle the configs the ordinary way
    return root


def _legacy_mlp(x, sd, prefix, h):
    x = x @ sd[f"{prefix}.0.weight"].T + sd[f"{prefix}.0.bias"]
    x = F.gelu(F.layer_norm(x, (h,), sd[f"{prefix}.1.weight"], sd[f"{prefix}.1.bias"], eps=1e-5))
    return x @ sd[f"{prefix}.4.weight"].T + sd[f"{prefix}.4.bias"]


@pytest.mark.parametrize("name", ["lw_zip", "lw_legacy"])
def test_lightweight_checkpoint_converts_and_matches_the_legacy_math(legacy, tmp_path, name):
    from transformers import AutoModel

    from modeling_evalign.convert_legacy import convert_legacy_checkpoint, load_legacy_checkpoint

    src, ref = legacy / f"{name}.pt", load_file(str(legacy / f"{name}.ref.safetensors"))
    loaded = load_legacy_checkpoint(src)
    assert loaded["config"]["__class__"] == "LightweightAlignmentConfig" and loaded["config"]["hidden_dim"] == 16
    assert loaded["optimizer_state_dict"]["param_groups"][0]["lr"] == 1e-4
    out = convert_legacy_checkpoint(src, tmp_path / "hf")
    model = AutoModel.from_pretrained(out)
    assert type(model).__name__ == "LegacyAlignmentModel" and model.config.legacy_config["use_whitening"] is True
    sd = {k: v.double() for k, v in ref.items()}
    x = torch.randn(5, 12, dtype=torch.float64)
    # the legacy forward, eval mode: whiten with the running stats (SVD), MLP, + 0.1 * residual, * scale
    u, s, v = torch.linalg.svd(sd["whitening.running_cov"] + 1e-5 * torch.eye(12, dtype=torch.float64))
    w = (x - sd["whitening.running_mean"]) @ (u @ torch.diag(1 / torch.sqrt(s + 1e-5)) @ v)
    expected = (_legacy_mlp(w, sd, "adapter.mlp", 16) + 0.1 * w @ sd["residual_proj.weight"].T) * sd["scale"]
    with torch.no_grad():
        got = model(event_features=x.float()).aligned_features
    assert torch.allclose(got.double(), expected, atol=1e-5)


def test_contrastive_on_flattened_pixels_converts_with_that_note(legacy, tmp_path, capsys):
    from transformers import AutoModel

    from modeling_evalign.convert_legacy import convert_legacy_checkpoint, main

    src, ref = legacy / "contrastive.pt", load_file(str(legacy / "contrastive.ref.safetensors"))
    assert main([str(src), str(tmp_path / "hf")]) == 0  # the CLI (python -m modeling_evalign.convert_legacy)
    assert "flattened 224x224x3" in capsys.readouterr().out
    model = AutoModel.from_pretrained(tmp_path / "hf")
    assert "flattened 224x224x3 RGB pixels" in model.config.input_description
    info = (tmp_path / "hf" / "training_info.json").read_text()
    assert "event_projection_head.projection.0.weight" in info and "logit_scale" in info  # dropped, loss-only
    sd = {k: v.double() for k, v in ref.items() if k.startswith("event_projector")}
    x = torch.rand(2, 224 * 224 * 3, dtype=torch.float64)
    with torch.no_grad():
        got = model(event_features=x.float()).aligned_features.double()
    assert torch.allclose(got, _legacy_mlp(x, sd, "event_projector.mlp", 8), atol=1e-4)
    assert convert_legacy_checkpoint(src, tmp_path / "hf2") == tmp_path / "hf2"


@pytest.mark.parametrize("zip_format", [True, False])
def test_code_running_pickle_is_refused_and_never_runs(legacy, tmp_path, zip_format):
    from modeling_evalign.convert_legacy import LegacyCheckpointError, convert_legacy_checkpoint

    marker, src = legacy / "pwned", legacy / f"evil_{zip_format}.pt"
    with pytest.raises(LegacyCheckpointError, match=r"refused: unpickling it needs posix\.system.*nothing in the file"):
        convert_legacy_checkpoint(src, tmp_path / "hf")
    assert not marker.exists() and not (tmp_path / "hf").exists()
