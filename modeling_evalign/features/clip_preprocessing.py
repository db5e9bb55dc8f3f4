"""CLIP image preprocessing in torch (no torchvision, no PIL resampling).

Same steps as transformers' ``CLIPImageProcessor``: resize the shortest side to ``image_size`` (bicubic,
antialiased), centre crop ``image_size x image_size``, scale to [0, 1], normalise with the OpenAI CLIP mean
and std. Values differ from the PIL path by resampling rounding only (PIL rounds to uint8 after resizing).
:func:`clip_preprocess_tensor` is the batched, differentiable form for float images already in [0, 1]
(e.g. reconstructed frames); :func:`clip_preprocess` takes uint8 images of any sizes one by one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def to_uint8_hwc(image) -> np.ndarray:
    """A PIL image, or an array/tensor [H, W, 3] (uint8), as a uint8 numpy array [H, W, 3] (RGB)."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL image: avoid importing PIL here
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        image = image.cpu().numpy()
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image: expected shape [H, W, 3], got {tuple(image.shape)}")
    if image.dtype != np.uint8:
        raise TypeError(f"image: expected dtype uint8, got {image.dtype}")
    return image


def clip_preprocess_tensor(
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
        x = x.clamp(0.0, 1.0)  # bicubic overshoot
    top, left = (new_h - image_size) // 2, (new_w - image_size) // 2
    x = x[..., top : top + image_size, left : left + image_size]
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


def clip_preprocess(
    images: Sequence,
    image_size: int,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
) -> torch.Tensor:
    """Images (PIL or uint8 [H, W, 3], sizes may differ) -> float32 pixel values [N, 3, image_size, image_size]."""
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    out = [
        clip_preprocess_tensor(
            torch.from_numpy(to_uint8_hwc(image).astype(np.float32) / 255.0).permute(2, 0, 1)[None],
            image_size, mean, std,
        )[0]
        for image in images
    ]
    if not out:
        return torch.zeros((0, 3, image_size, image_size), dtype=torch.float32)
    return torch.stack(out)
