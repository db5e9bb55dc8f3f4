"""Synthetic paired features with a known linear relation, for tests, demos and benchmarks.

``target = event @ weight + noise * randn`` with ``event ~ N(0, 1)`` and ``weight ~ N(0, 1/De)``,
so each target coordinate has variance about 1 before noise and ``noise`` is a noise-to-signal
standard-deviation ratio. Token-level pairs apply the same map to every token.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass
class LinearPairs:
    """Generated pairs.

    Attributes:
        event_features: ``[n, De]`` or ``[n, T, De]`` float32.
        target_features: ``[n, Dt]`` or ``[n, T, Dt]`` float32.
        weight: ``[De, Dt]`` float32, the true map.
    """

    event_features: torch.Tensor
    target_features: torch.Tensor
    weight: torch.Tensor


def make_linear_pairs(
    n: int,
    event_dim: int,
    target_dim: int,
    noise: float = 0.1,
    seed: int = 0,
    num_tokens: int | None = None,
) -> LinearPairs:
    """Generate ``n`` pairs related by a random linear map plus Gaussian noise.

    Args:
        n: number of pairs.
        event_dim, target_dim: feature widths ``De`` and ``Dt``.
        noise: noise standard deviation relative to the (unit) signal scale; >= 0.
        seed: seed of a private generator (the global torch RNG is untouched).
        num_tokens: ``None`` for pooled ``[n, D]`` features, else ``T`` tokens per sample ``[n, T, D]``.
    """
    for name, value in (("n", n), ("event_dim", event_dim), ("target_dim", target_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if num_tokens is not None and (isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1):
        raise ValueError(f"num_tokens must be None or a positive int, got {num_tokens!r}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(event_dim, target_dim, generator=gen) / event_dim**0.5
    shape = (n, event_dim) if num_tokens is None else (n, num_tokens, event_dim)
    event = torch.randn(*shape, generator=gen)
    target = event @ weight
    target = target + noise * torch.randn(target.shape, generator=gen)
    return LinearPairs(event.contiguous(), target.contiguous(), weight)


def write_feature_directory(
    path: str | os.PathLike,
    n: int,
    event_dim: int,
    target_dim: int,
    noise: float = 0.1,
    seed: int = 0,
    num_tokens: int | None = None,
    num_sequences: int | None = None,
    window_us: int = 1_000_000,
) -> Path:
    """Write :func:`make_linear_pairs` as an ``AlignmentDataset`` directory (atomically).

    With ``num_sequences`` the rows are spread over that many fake sequences (contiguous blocks) and
    ``metadata.json`` gets per-sample ``sequence``, ``window_start_us`` and ``window_end_us``
    (consecutive windows of ``window_us`` microseconds). Returns ``path``.
    """
    from .alignment_dataset import AlignmentDataset

    pairs = make_linear_pairs(n, event_dim, target_dim, noise=noise, seed=seed, num_tokens=num_tokens)
    metadata: dict[str, Any] = {"source": "modeling_evalign.data.synthetic_features", "noise": noise, "seed": seed}
    if num_sequences is not None:
        if isinstance(num_sequences, bool) or not isinstance(num_sequences, int) or not 1 <= num_sequences <= n:
            raise ValueError(f"num_sequences must be an int in [1, n={n}], got {num_sequences!r}")
        per_seq = -(-n // num_sequences)
        metadata["samples"] = [
            {
                "sequence": f"synthetic_{i // per_seq:02d}",
                "window_start_us": (i % per_seq) * window_us,
                "window_end_us": (i % per_seq + 1) * window_us,
            }
            for i in range(n)
        ]
    dataset = AlignmentDataset(pairs.event_features, pairs.target_features, metadata)
    return dataset.save_to_directory(path)
