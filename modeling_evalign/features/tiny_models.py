"""Tiny configs of the frozen towers (CLIP, LLaMA) for tests and the demo: nothing is downloaded.

Real runs pass a Hub repo id or local path (e.g. ``openai/clip-vit-large-patch14-336``) instead.
"""

from __future__ import annotations


def tiny_clip_config(
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    projection_dim: int = 32,
    vocab_size: int = 1000,
):
    """A ``CLIPConfig`` with small vision and text towers ((image_size/patch_size)^2 + 1 tokens)."""
    from transformers import CLIPConfig

    common = dict(
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        projection_dim=projection_dim,
    )
    return CLIPConfig(
        vision_config=dict(image_size=image_size, patch_size=patch_size, **common),
        text_config=dict(vocab_size=vocab_size, max_position_embeddings=32, **common),
        projection_dim=projection_dim,
    )


def tiny_llama_config(
    vocab_size: int = 128,
    hidden_size: int = 48,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 256,
    initializer_range: float = 0.2,
):
    """A ``LlamaConfig`` for tiny LLaMA-architecture LMs (stand-ins for EventGPT's and Video-LLaVA's LLaMA).

    ``initializer_range`` is larger than LLaMA's 0.02 so that a randomly initialised model's greedy
    output depends on its prompt (with 0.02 the logits are nearly flat). No BOS/EOS/PAD ids are set:
    generation runs for exactly ``max_new_tokens``.
    """
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        initializer_range=initializer_range,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
