"""Load the original E2VID / FireNet checkpoints (``.pth.tar`` / ``.pth``) safely and convert them.

Only ``torch.load(weights_only=True)`` is used: a file whose pickle needs an arbitrary global (a
config-parser object, a pathlib path, a custom class) is refused with :class:`UnsafeCheckpointError`
naming the file and the global; it is never executed and there is no ``weights_only=False`` fallback.

Key renames (original -> this package), applied after dropping a DataParallel ``module.`` prefix:

==============================  ===================================  ==========================
original                        here                                 layout
==============================  ===================================  ==========================
``unetrecurrent.<rest>``        ``<rest>``                           E2VID (arch E2VIDRecurrent)
``net.<rest>``                  ``<rest>``                           FireNet, "net" layout
``head.conv2d.*``               ``head.conv.conv2d.*``               FireNet, "G/R" layout
``G1.*``                        ``head.recurrent_block.*``           FireNet, "G/R" layout
``R1.*``                        ``resblocks.0.conv.*``               FireNet, "G/R" layout
``G2.*``                        ``resblocks.0.recurrent_block.*``    FireNet, "G/R" layout
``R2.*``                        ``resblocks.1.*``                    FireNet, "G/R" layout
``pred.conv2d.*``               ``pred.conv2d.*``                    FireNet, "G/R" layout
==============================  ===================================  ==========================

E2VID's own module names (``head.conv2d``, ``encoders.N.conv.conv2d`` / ``.norm_layer``,
``encoders.N.recurrent_block.Gates``, ``resblocks.N.conv1/bn1/conv2/bn2``,
``decoders.N.transposed_conv2d`` or ``.conv2d`` / ``.norm_layer``, ``pred.conv2d`` / ``.norm_layer``)
are kept as they are.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from .configuration_e2vid import E2VIDConfig
from .configuration_firenet import FireNetConfig
from .modeling_e2vid import E2VIDModel
from .modeling_firenet import FireNetModel

E2VID_ARCHS = ("E2VIDRecurrent",)
FIRENET_ARCHS = ("FireNet", "FireNet_legacy")
_FIRENET_GR_RENAMES = (
    ("head.conv2d.", "head.conv.conv2d."),
    ("G1.", "head.recurrent_block."),
    ("R1.", "resblocks.0.conv."),
    ("G2.", "resblocks.0.recurrent_block."),
    ("R2.", "resblocks.1."),
    ("pred.", "pred."),
)


class UnsafeCheckpointError(ValueError):
    """The checkpoint's pickle needs a global that ``weights_only=True`` does not allow; it was not loaded."""


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` on CPU with readable errors (file named in every message)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found is None:
            raise ValueError(f"{path} is not a readable torch checkpoint (corrupt pickle): {e}") from None
        raise UnsafeCheckpointError(
            f"refused to load {path}: its pickle needs the global {found.group(1)!r}, which is not a tensor, "
            "dict or plain value. Loading it would execute arbitrary code, so it was not loaded "
            "(weights_only=True; there is no unsafe fallback). If you trust the file, re-save only its "
            "tensors and plain values (arch, model kwargs as a dict, state_dict) in a separate environment."
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as e:
        raise ValueError(
            f"{path} is not a readable torch checkpoint (truncated or corrupt file?): {type(e).__name__}: {e}"
        ) from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}: expected a dict checkpoint with 'state_dict'")
    return obj


def _state_dict(ckpt: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    sd = ckpt.get("state_dict")
    if sd is None and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        sd = ckpt  # a bare state dict
    if not isinstance(sd, dict) or not sd:
        raise KeyError(f"{path}: no 'state_dict' found (top-level keys: {sorted(map(str, ckpt))})")
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: state_dict entries that are not tensors: {bad}")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _arch(ckpt: dict[str, Any], sd: dict[str, torch.Tensor], path: Path) -> str:
    arch = ckpt.get("arch")
    if arch is None:  # infer from the key layout
        if any(k.startswith("unetrecurrent.") for k in sd):
            arch = "E2VIDRecurrent"
        elif any(k.startswith(("net.head.", "G1.")) for k in sd):
            arch = "FireNet"
    if arch in E2VID_ARCHS:
        return "e2vid"
    if arch in FIRENET_ARCHS:
        return "firenet"
    raise ValueError(
        f"{path}: unsupported arch {arch!r}: expected one of {E2VID_ARCHS + FIRENET_ARCHS} "
        "(recurrent E2VID or FireNet)"
    )


def _model_kwargs(ckpt: dict[str, Any]) -> dict[str, Any]:
    kwargs = ckpt.get("model")
    if kwargs is None and isinstance(ckpt.get("config"), dict):
        kwargs = ckpt["config"].get("model")
    return dict(kwargs or {})


def _none(value) -> str:
    return "none" if value in (None, "none", "None", "") else value


def config_from_original(kind: str, kwargs: dict[str, Any], path: str | os.PathLike = "<checkpoint>"):
    """Translate the original model kwargs (``ckpt['model']`` / ``ckpt['config']['model']``) into a config."""
    if kind == "e2vid":
        fields = {"num_bins", "skip_type", "num_encoders", "base_num_channels", "num_residual_blocks", "norm",
                  "use_upsample_conv", "recurrent_block_type", "kernel_size"}
        out = {k: v for k, v in kwargs.items() if k in fields}
        if "norm" in out:
            out["norm"] = _none(out["norm"])
        if "BN_momentum" in kwargs:
            out["bn_momentum"] = float(kwargs["BN_momentum"])
        if _none(kwargs.get("final_activation", "sigmoid")) != "sigmoid":
            out["final_activation"] = "none"
        return E2VIDConfig(**out)
    fields = {"num_bins", "base_num_channels", "kernel_size", "recurrent_block_type"}
    out = {k: v for k, v in kwargs.items() if k in fields}
    out["final_activation"] = _none(kwargs.get("final_activation", "none"))
    # FireNet's topology is fixed; anything describing another one is an error, not silently ignored.
    for key, ok in (("norm", lambda v: _none(v) == "none"), ("num_residual_blocks", lambda v: v == 2),
                    ("recurrent_blocks", lambda v: v in ({"resblock": [0]}, {"resblock": (0,)}))):
        if key in kwargs and not ok(kwargs[key]):
            raise ValueError(f"{path}: FireNet model option {key}={kwargs[key]!r} is not supported "
                             "(expected the published topology: no norm, 2 residual blocks, resblock 0 recurrent)")
    return FireNetConfig(**out)


def convert_state_dict(kind: str, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename original keys to this package's module names (see the module docstring's table)."""
    out = {}
    for key, value in sd.items():
        new = key
        if kind == "e2vid":
            new = key.removeprefix("unetrecurrent.")
        elif key.startswith("net."):
            new = key.removeprefix("net.")
        else:
            for old, repl in _FIRENET_GR_RENAMES:
                if key.startswith(old):
                    new = repl + key[len(old):]
                    break
        if new in out:
            raise ValueError(f"two checkpoint keys map to {new!r} (mixed naming schemes?)")
        out[new] = value
    return out


def load_original_checkpoint(path: str | os.PathLike):
    """Load an original E2VID (``arch`` E2VIDRecurrent) or FireNet checkpoint into an ``E2VIDModel`` /
    ``FireNetModel`` in eval mode.

    Reads legacy (non-zip) and zip torch files with ``weights_only=True``; the architecture comes from
    ``'arch'`` (or the key layout) and the hyper-parameters from ``'model'`` or ``config['model']``.
    Strict: missing, unexpected or wrongly shaped keys raise a ValueError listing them. The one
    tolerated gap is BatchNorm ``num_batches_tracked`` (absent in pre-0.4.1 files; unused at inference).
    """
    path = Path(path)
    ckpt = read_checkpoint(path)
    sd = _state_dict(ckpt, path)
    kind = _arch(ckpt, sd, path)
    config = config_from_original(kind, _model_kwargs(ckpt), path)
    model = (E2VIDModel if kind == "e2vid" else FireNetModel)(config)
    converted = convert_state_dict(kind, sd)
    expected = model.state_dict()
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in converted:
            converted[key] = torch.zeros_like(value)
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{path}: state_dict does not match {type(model).__name__}({config.to_diff_dict()}): "
            f"missing keys {missing}; unexpected keys {unexpected}"
        )
    wrong = [f"{k}: {tuple(converted[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if converted[k].shape != v.shape]
    if wrong:
        raise ValueError(f"{path}: state_dict tensors with the wrong shape (found != expected): {wrong}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in converted.items()}, strict=True)
    return model.eval()


def convert_original_checkpoint(path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Convert an original checkpoint to a Hugging Face directory (config.json + model.safetensors + code).

    Also writes ``conversion_info.json`` (source name, size, sha256). Returns ``out_dir``.
    """
    from ..utils.io_utils import atomic_write_json

    path, out_dir = Path(path), Path(out_dir)
    model = load_original_checkpoint(path)
    model.save_pretrained(out_dir)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    atomic_write_json(out_dir / "conversion_info.json", {
        "source_file": path.name, "source_bytes": path.stat().st_size, "source_sha256": digest,
        "model_type": model.config.model_type,
    })
    return out_dir
