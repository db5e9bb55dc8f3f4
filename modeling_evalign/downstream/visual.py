"""A VideoLlava-style VLM's visual tokens in tower space, and any tower-space tokens as its input embeddings.

Aligned event tokens live in the VLM's *tower space* (its CLIP tower's hidden states at
``vision_feature_layer``, before the ``multi_modal_projector``). To let the VLM read them they take the
path its own pixels take: the model's own projector, then ``masked_scatter`` at the placeholder tokens,
exactly as ``VideoLlavaModel.forward`` merges ``get_image_features``/``get_video_features``. So
``visual_inputs_embeds(model, ids, video_features=tower_features(model, pixels, "video"))`` gives the
same ``inputs_embeds`` (and logits) as ``model(ids, pixel_values_videos=pixels)``.

Layouts (read from the config, nothing fixed): image ``[B, N, D]`` with the CLS token dropped when
``vision_feature_select_strategy == "default"`` (Video-LLaVA: 256 x 1024); video ``[B, F, N + 1, D]``
with CLS kept, as ``get_video_features`` does (Video-LLaVA: 8 x 257 x 1024).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["num_video_frames", "tower_features", "visual_inputs_embeds", "vlm_parts"]


def vlm_parts(model: Any) -> Any:
    """The inner ``VideoLlavaModel``/``LlavaModel`` (towers, projector, language model) of ``model``."""
    inner = getattr(model, "model", model)
    if not hasattr(inner, "multi_modal_projector"):
        raise TypeError(
            f"{type(model).__name__} is not a Llava-style VLM: expected a model with a multi_modal_projector "
            "(e.g. VideoLlavaForConditionalGeneration)"
        )
    return inner


def _feature_layers(model: Any) -> list[int]:
    layer = model.config.vision_feature_layer
    return [layer] if isinstance(layer, int) else list(layer)


def _tower(inner: Any, kind: str) -> Any:
    """VideoLlava has an image and a video tower; Llava one ``vision_tower``."""
    name = f"{kind}_tower"
    return getattr(inner, name) if hasattr(inner, name) else inner.vision_tower


def num_video_frames(config: Any) -> int:
    """Frames of the video path: ``video_seq_length / (patches + 1)`` (Video-LLaVA: 2056 / 257 = 8)."""
    vision = config.vision_config
    per_frame = (vision.image_size // vision.patch_size) ** 2 + 1
    frames, rest = divmod(int(config.video_seq_length), per_frame)
    if rest or frames < 1:
        raise ValueError(
            f"config.video_seq_length={config.video_seq_length} is not a multiple of the {per_frame} tokens per "
            f"frame of a {vision.image_size}px / patch {vision.patch_size} tower (CLS kept)"
        )
    return frames


@torch.no_grad()
def tower_features(model: Any, pixel_values: torch.Tensor, kind: str) -> torch.Tensor:
    """The VLM's own tower features at ``vision_feature_layer`` (tower space, before the projector).

    Args:
        model: ``VideoLlavaForConditionalGeneration`` (or its inner ``VideoLlavaModel``; Llava for images).
        pixel_values: ``[B, 3, H, W]`` for ``kind="image"``, ``[B, F, 3, H, W]`` for ``kind="video"``,
            preprocessed as the model's processor does.
        kind: ``"image"`` -> ``[B, N, D]`` (CLS dropped under the "default" select strategy);
            ``"video"`` -> ``[B, F, N + 1, D]`` (CLS kept, as ``get_video_features`` does).
    """
    if kind not in ("image", "video"):
        raise ValueError(f"kind={kind!r} is invalid: expected 'image' or 'video'")
    inner = vlm_parts(model)
    expected = 4 if kind == "image" else 5
    if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != expected or pixel_values.shape[-3] != 3:
        shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
        layout = "[B, 3, H, W]" if kind == "image" else "[B, F, 3, H, W]"
        raise ValueError(f"pixel_values has shape {shape}: expected {layout} for kind={kind!r}")
    tower = _tower(inner, kind)
    param = next(tower.parameters())
    flat = pixel_values.reshape(-1, *pixel_values.shape[-3:]).to(device=param.device, dtype=param.dtype)
    hidden = tower(flat, output_hidden_states=True, return_dict=True).hidden_states
    feats = torch.cat([hidden[i] for i in _feature_layers(model)], dim=-1)
    if kind == "image":
        if model.config.vision_feature_select_strategy == "default":
            feats = feats[:, 1:]
        return feats
    return feats.reshape(pixel_values.shape[0], pixel_values.shape[1], *feats.shape[1:])


def visual_inputs_embeds(
    model: Any,
    input_ids: torch.Tensor,
    *,
    video_features: torch.Tensor | None = None,
    image_features: torch.Tensor | None = None,
) -> torch.Tensor:
    """``inputs_embeds [B, L, H]``: the text embeddings of ``input_ids`` with the projected visual tokens
    scattered at the ``<video>``/``<image>`` placeholder positions, as the model's own forward merges them.

    Args:
        model: the VLM whose ``multi_modal_projector`` and input embeddings are used.
        input_ids: ``[B, L]`` prompt ids holding ``F * T`` video (or ``T`` image) placeholder tokens per row.
        video_features: ``[B, F, T, D]`` tower-space tokens (e.g. aligned event tokens), D = the tower width.
        image_features: ``[B, T, D]`` tower-space tokens.
    """
    inner = vlm_parts(model)
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise ValueError(f"input_ids has shape {shape}: expected [B, L] token ids")
    embed = inner.get_input_embeddings()
    embeds = embed(input_ids.to(embed.weight.device))
    width = inner.multi_modal_projector.linear_1.in_features
    for name, feats, token_id, ndim in (
        ("image_features", image_features, model.config.image_token_id, 3),
        ("video_features", video_features, model.config.video_token_id, 4),
    ):
        if feats is None:
            continue
        if not isinstance(feats, torch.Tensor) or feats.dim() != ndim or feats.shape[-1] != width:
            shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
            layout = "[B, T, D]" if ndim == 3 else "[B, F, T, D]"
            raise ValueError(f"{name} has shape {shape}: expected {layout} with D = {width} (the tower width)")
        mask = input_ids == token_id
        per_row = mask.sum(dim=1)
        tokens = feats[0, ..., 0].numel()
        if feats.shape[0] != input_ids.shape[0] or bool((per_row != tokens).any()):
            raise ValueError(
                f"{name} has shape {tuple(feats.shape)} ({tokens} tokens per row) but input_ids "
                f"{tuple(input_ids.shape)} holds {per_row.tolist()} placeholder tokens (id {token_id}) per row"
            )
        projected = inner.multi_modal_projector(feats.to(embeds.device, embeds.dtype).reshape(-1, width))
        embeds = embeds.masked_scatter(mask.unsqueeze(-1).to(embeds.device), projected.to(embeds.dtype))
    return embeds
