"""Tiny ``VideoLlavaForConditionalGeneration`` models built from configs (nothing downloaded) for the downstream tests.

Layout of the stand-in: tower 32 px / patch 8 -> 16 patches + CLS (image path 16 tokens, video path
``frames`` x 17 tokens), tower width 32, vocabulary 64 with ``<image>`` = 62, ``<video>`` = 63, eos = 2.
"""

from __future__ import annotations

import torch

VOCAB, IMAGE_ID, VIDEO_ID, EOS = 64, 62, 63, 2
IMAGE_SIZE, PATCH, TOWER = 32, 8, 32
TOKENS = (IMAGE_SIZE // PATCH) ** 2  # image path (CLS dropped); the video path keeps CLS: TOKENS + 1 per frame


def tiny_video_llava(hidden: int = 48, layers: int = 2, frames: int = 3, seed: int = 0, tower_seed: int = 100):
    """A random VideoLlava in eval mode; models with the same ``tower_seed`` share the vision tower weights."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        VideoLlavaConfig,
        VideoLlavaForConditionalGeneration,
    )

    vision = CLIPVisionConfig(
        image_size=IMAGE_SIZE, patch_size=PATCH, hidden_size=TOWER, intermediate_size=64,
        num_hidden_layers=3, num_attention_heads=4, projection_dim=16,
    )
    text = LlamaConfig(
        vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512, initializer_range=0.2,
        eos_token_id=EOS, bos_token_id=1, pad_token_id=0,
    )
    config = VideoLlavaConfig(
        vision_config=vision, text_config=text, image_token_index=IMAGE_ID, video_token_index=VIDEO_ID,
        image_seq_length=TOKENS, video_seq_length=frames * (TOKENS + 1), vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    model = VideoLlavaForConditionalGeneration(config).eval()
    torch.manual_seed(tower_seed)
    fresh = VideoLlavaForConditionalGeneration(config)
    with torch.no_grad():  # the same tower for every model of a test, as target and draft share CLIP
        for name in ("image_tower", "video_tower"):
            getattr(model.model, name).load_state_dict(getattr(fresh.model, name).state_dict())
    model.generation_config.eos_token_id = EOS
    model.generation_config.pad_token_id = 0
    return model


def prompt_ids(batch: int, kind: str, frames: int = 3, seed: int = 0, text: int = 4) -> torch.LongTensor:
    """``[batch, L]``: 1 bos id, the placeholders, then ``text`` random question ids (3..59)."""
    gen = torch.Generator().manual_seed(seed)
    n = TOKENS if kind == "image" else frames * (TOKENS + 1)
    token = IMAGE_ID if kind == "image" else VIDEO_ID
    rows = [torch.cat([torch.tensor([1]), torch.full((n,), token), torch.randint(3, 60, (text,), generator=gen)])
            for _ in range(batch)]
    return torch.stack(rows)


def pixels(batch: int, kind: str, frames: int = 3, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, 3, IMAGE_SIZE, IMAGE_SIZE) if kind == "image" else (batch, frames, 3, IMAGE_SIZE, IMAGE_SIZE)
    return torch.randn(shape, generator=gen)
