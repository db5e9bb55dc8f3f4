"""CLIP preprocessing of batched float images in torch (differentiable; no torchvision, no PIL).

Same steps as ``CLIPImageProcessor`` (and :mod:`modeling_evalign.features.clip_preprocessing`, which
handles uint8 images one by one): resize the shortest side to ``image_size`` (bicubic, antialiased),
centre crop ``image_size x image_size``, normalise with the CLIP mean/std. Input is already in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..features.clip_preprocessing import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD


def clip_preprocess(
    images: torch.Tensor,
    image_size: int,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
) -> torch.Tensor:
    """``images`` float ``[B, 3, H, W]`` in [0, 1] -> pixel values ``[B, 3, image_size, image_size]``."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"clip_preprocess: images has shape {shape}: expected a float tensor [B, 3, H, W]")
    if not images.is_floating_point():
        raise TypeError(f"clip_preprocess: images must be floating point in [0, 1], got {images.dtype}")
    if not isinstance(image_size, int) or image_size <= 0:
        raise ValueError(f"clip_preprocess: image_size must be a positive int, got {image_size!r}")
    h, w = images.shape[-2:]
    scale = image_size / min(h, w)
    new_h, new_w = max(image_size, round(h * scale)), max(image_size, round(w * scale))
    x = images
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
        x = x.clamp(0.0, 1.0)  # bicubic overshoot; the uint8 path clamps too
    top, left = (new_h - image_size) // 2, (new_w - image_size) // 2
    x = x[..., top : top + image_size, left : left + image_size]
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean_t) / std_t
