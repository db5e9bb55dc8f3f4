"""Compute precision of the frozen encoders during extraction: fp32, or bf16/fp16 through autocast.

Autocast (not casting the weights) because the caller's encoder stays untouched (its fingerprint and later
fp32 use are unchanged) and LayerNorm/softmax stay in fp32: on this repo's CPU (AVX512-BF16) a bf16 ViT ran
1.66x faster under autocast with 3x smaller error than with bf16 weights (1.91x faster). fp16 has no fast
CPU matmul (2.5x SLOWER than fp32 here), so on CPU ``float16`` computes in fp32 and only the stored
features are fp16: "autocast where it is faster". On CUDA both half types run under autocast.
"""

from __future__ import annotations

import contextlib

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(value: str | torch.dtype, name: str = "dtype") -> torch.dtype:
    """``"bfloat16"`` / ``torch.bfloat16`` -> ``torch.bfloat16``; ValueError naming the choices otherwise."""
    if isinstance(value, torch.dtype) and value in DTYPES.values():
        return value
    if isinstance(value, str) and value in DTYPES:
        return DTYPES[value]
    raise ValueError(f"{name} must be one of {list(DTYPES)}, got {value!r}")


def dtype_name(dtype: torch.dtype) -> str:
    return next(k for k, v in DTYPES.items() if v == dtype)


def compute_dtype(dtype: torch.dtype, device: torch.device | str) -> torch.dtype:
    """The dtype the matmuls really run in for a requested ``dtype`` on ``device`` (see the module docstring)."""
    device_type = torch.device(device).type
    if dtype == torch.float16 and device_type == "cpu":
        return torch.float32
    return dtype


def autocast_context(dtype: torch.dtype, device: torch.device | str):
    """``torch.autocast`` for a half compute dtype, else a no-op context."""
    device_type = torch.device(device).type
    if compute_dtype(dtype, device) == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)
