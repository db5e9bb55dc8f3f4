"""CLIP image preprocessing in torch (no torchvision, no PIL resampling).

Same steps as transformers' ``CLIPImageProcessor``: resize the shortest side to ``image_size`` (bicubic,
antialiased), centre crop ``image_size x image_size``, scale to [0, 1], normalise with the OpenAI CLIP mean
and std. Values differ from the PIL path by resampling rounding only (PIL rounds to uint8 after resizing).
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


def clip_preprocess(
    images: Sequence,
    image_size: int,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
) -> torch.Tensor:
    """Images (PIL or uint8 [H, W, 3], sizes may differ) -> float32 pixel values [N, 3, image_size, image_size]."""
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    out = []
    for image in images:
        arr = to_uint8_hwc(image)
        x = torch.from_numpy(arr.astype(np.float32)).permute(2, 0, 1)[None]  # [1, 3, H, W], 0..255 (a copy)
        h, w = arr.shape[:2]
        scale = image_size / min(h, w)
        new_h, new_w = max(image_size, round(h * scale)), max(image_size, round(w * scale))
        if (new_h, new_w) != (h, w):
            x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
            x = x.clamp_(0.0, 255.0)
        top, left = (new_h - image_size) // 2, (new_w - image_size) // 2
        x = x[0, :, top : top + image_size, left : left + image_size] / 255.0
        out.append((x - mean_t) / std_t)
    if not out:
        return torch.zeros((0, 3, image_size, image_size), dtype=torch.float32)
    return torch.stack(out)
