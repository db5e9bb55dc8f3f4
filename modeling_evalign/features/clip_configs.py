"""The vision towers of the two real CLIP checkpoints, from their public configs: real shapes, no download.

``openai/clip-vit-large-patch14-336`` (EventGPT's event encoder) and ``openai/clip-vit-large-patch14``
(Video-LLaVA's image tower) share the ViT-L/14 vision tower: hidden_size 1024, 24 layers, 16 heads,
intermediate 4096, patch 14, quick_gelu, layer_norm_eps 1e-5, projection_dim 768; image_size 336 (577
tokens = CLS + 24x24 patches) and 224 (257 tokens = CLS + 16x16). 303,507,456 parameters at 336.
:func:`random_clip_vision` builds one with random weights for full-size smoke runs and benchmarks; real
runs load the checkpoints (``extraction.load_clip_vision``).
"""

from __future__ import annotations

import torch

CLIP_L14_VISION = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    num_channels=3,
    patch_size=14,
    projection_dim=768,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    attention_dropout=0.0,
    initializer_range=0.02,
    initializer_factor=1.0,
)
IMAGE_SIZES = {"openai/clip-vit-large-patch14-336": 336, "openai/clip-vit-large-patch14": 224}


def clip_vision_config(repo_id: str = "openai/clip-vit-large-patch14-336", **overrides):
    """``CLIPVisionConfig`` of ``repo_id`` (one of :data:`IMAGE_SIZES`); ``overrides`` change fields."""
    from transformers import CLIPVisionConfig

    if repo_id not in IMAGE_SIZES:
        raise ValueError(f"repo_id must be one of {sorted(IMAGE_SIZES)}, got {repo_id!r}")
    return CLIPVisionConfig(**{**CLIP_L14_VISION, "image_size": IMAGE_SIZES[repo_id], **overrides})


def num_tokens(config) -> int:
    """Tokens per image of a CLIP vision config: CLS + (image_size / patch_size)^2."""
    return 1 + (config.image_size // config.patch_size) ** 2


def random_clip_vision(
    repo_id: str = "openai/clip-vit-large-patch14-336",
    seed: int = 0,
    device: torch.device | str = "cpu",
    **overrides,
):
    """A frozen ``CLIPVisionModel`` of ``repo_id``'s shape with random weights (built on ``device``)."""
    from transformers import CLIPVisionModel

    config = clip_vision_config(repo_id, **overrides)
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        model = CLIPVisionModel(config)
    return model.eval().requires_grad_(False)
