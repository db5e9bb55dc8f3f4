"""The real CLIP-L/14 vision configs (features.clip_configs): public values, token counts, parameter counts."""

from __future__ import annotations

import pytest
import torch


def _param_count_formula(image_size: int) -> int:
    """ViT-L/14 vision tower parameters counted by hand (CLIPVisionModel: no projection)."""
    d, mlp, layers, patch = 1024, 4096, 24, 14
    tokens = 1 + (image_size // patch) ** 2
    embeddings = 3 * patch * patch * d + d + tokens * d  # patch conv (no bias), CLS, positions
    block = 4 * (d * d + d) + (d * mlp + mlp) + (mlp * d + d) + 2 * 2 * d  # q k v o, MLP, 2 LayerNorms
    return embeddings + 2 * d + layers * block + 2 * d  # + pre- and post-LayerNorm


@pytest.mark.parametrize("repo, size, tokens", [("openai/clip-vit-large-patch14-336", 336, 577),
                                                ("openai/clip-vit-large-patch14", 224, 257)])
def test_clip_l14_configs_have_the_public_shapes(repo, size, tokens):
    from transformers import CLIPVisionModel

    from modeling_evalign.features.clip_configs import clip_vision_config, num_tokens

    cfg = clip_vision_config(repo)
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (
        1024, 4096, 24, 16)
    assert (cfg.patch_size, cfg.image_size, cfg.projection_dim, cfg.hidden_act) == (14, size, 768, "quick_gelu")
    assert num_tokens(cfg) == tokens
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = CLIPVisionModel(cfg)
    assert sum(p.numel() for p in model.parameters()) == _param_count_formula(size)
    assert _param_count_formula(336) == 303_507_456
    with pytest.raises(ValueError, match="repo_id"):
        clip_vision_config("openai/clip-vit-base-patch32")


def test_random_tower_is_seeded_frozen_and_keeps_the_callers_rng():
    from modeling_evalign.features.clip_configs import random_clip_vision

    small = dict(num_hidden_layers=1, hidden_size=32, intermediate_size=64, num_attention_heads=2)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    a = random_clip_vision(seed=1, **small)
    assert torch.equal(torch.rand(3), expected)  # the caller's RNG stream is untouched
    b = random_clip_vision(seed=1, **small)
    c = random_clip_vision(seed=2, **small)
    wa, wb, wc = (m.get_input_embeddings().weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert not a.training and not any(p.requires_grad for p in a.parameters())
    with torch.no_grad():
        out = a(pixel_values=torch.randn(1, 3, 336, 336)).last_hidden_state
    assert out.shape == (1, 577, 32)
