"""Image-level triple-modal model: CEIA's LoRA vision tower trained against images and class prompts.

The frozen CLIP text tower (and its tokenizer) is held in a plain attribute, outside the module tree: it
is never in ``state_dict`` nor in a checkpoint, and checkpoints stay LoRA + logit scale only (inherited
from :class:`ContrastiveImageAlignmentModel`). It is loaded from ``config.text_model_id`` on
first use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..contrastive.modeling_contrastive_image import ContrastiveImageAlignmentModel
from ..modeling_outputs import ContrastiveAlignmentOutput
from .configuration_triple_modal_image import TripleModalImageAlignmentConfig
from .modeling_triple_modal import ZeroShotOutput


@dataclass
class TripleModalImageOutput(ContrastiveAlignmentOutput):
    r"""
    loss (`torch.Tensor` of shape `()`, *optional*): ``contrastive_loss + event_text_weight * event_text_loss
        + image_text_weight * image_text_loss`` over the terms whose inputs were given.
    aligned_features (`torch.Tensor` of shape `(batch_size, projection_dim)`): event image embeddings.
    contrastive_loss (`torch.Tensor` of shape `()`, *optional*): symmetric InfoNCE event <-> image (with
        `pixel_values`).
    event_text_loss (`torch.Tensor` of shape `()`, *optional*): cross entropy of `logits_per_class` against
        `labels`.
    image_text_loss (`torch.Tensor` of shape `()`, *optional*): cross entropy of `image_logits_per_class`
        against `labels` (with `pixel_values` and `labels`).
    logits_per_class (`torch.Tensor` of shape `(batch_size, num_classes)`, *optional*): scaled cosine
        similarities of the event embeddings to the event-prompt text embeddings (with `labels`).
    image_logits_per_class (`torch.Tensor` of shape `(batch_size, num_classes)`, *optional*): the same for
        the frozen image embeddings against the image-prompt text embeddings.
    """

    event_text_loss: torch.Tensor | None = None
    image_text_loss: torch.Tensor | None = None
    logits_per_class: torch.Tensor | None = None
    image_logits_per_class: torch.Tensor | None = None


def load_clip_text_tower(name_or_path: str, revision: str = "main"):
    """``(CLIPTextModelWithProjection, tokenizer)`` from a CLIP checkpoint (full or text-only)."""
    from transformers import AutoTokenizer, CLIPTextModelWithProjection
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a full CLIP checkpoint's vision weights are expected to be unused
    try:
        model = CLIPTextModelWithProjection.from_pretrained(name_or_path, revision=revision)
    finally:
        hf_logging.set_verbosity(verbosity)
    return model, AutoTokenizer.from_pretrained(name_or_path, revision=revision)


class TripleModalImageAlignmentModel(ContrastiveImageAlignmentModel):
    """Event images -> CLIP image-embedding space, aligned to RGB images and to class prompts.

    ``forward(event_pixel_values [B, 3, S, S], pixel_values [B, 3, S, S] | None, labels [B] int64 | None)``
    returns a :class:`TripleModalImageOutput`. Trainable: the vision tower's LoRA (q/v) and the logit scale;
    the target vision tower and the text tower are frozen.

    Args:
        config: the strategy config.
        clip_model: an already loaded ``CLIPVisionModelWithProjection`` (see the parent class).
        text_model, tokenizer: an already loaded ``CLIPTextModelWithProjection`` and its tokenizer, instead
            of loading ``config.text_model_id`` on first use.
    """

    config_class = TripleModalImageAlignmentConfig

    def __init__(self, config: TripleModalImageAlignmentConfig, clip_model: nn.Module | None = None,
                 text_model: nn.Module | None = None, tokenizer=None):
        super().__init__(config, clip_model=clip_model)
        # plain attributes, not submodules: the frozen text tower is never saved nor moved by .to()
        object.__setattr__(self, "_text", None)
        object.__setattr__(self, "_prompt_cache", {})
        if (text_model is None) != (tokenizer is None):
            raise ValueError("pass text_model and tokenizer together (or neither, to load the configured checkpoint)")
        if text_model is not None:
            self.set_text_tower(text_model, tokenizer)

    # -- text tower ---------------------------------------------------------------------------------
    def set_text_tower(self, text_model: nn.Module, tokenizer) -> None:
        """Use ``text_model`` (a ``CLIPTextModelWithProjection``) and ``tokenizer``; frozen, eval mode."""
        proj = getattr(getattr(text_model, "config", None), "projection_dim", None)
        expected = self.target_encoder.config.projection_dim
        if proj != expected:
            raise ValueError(
                f"text tower projection_dim={proj}: expected the vision tower's projection_dim={expected} "
                "(text and image embeddings must share the CLIP space)"
            )
        text_model.requires_grad_(False).eval()
        object.__setattr__(self, "_text", (text_model, tokenizer))
        self._prompt_cache.clear()

    def text_tower(self):
        """``(text_model, tokenizer)``, loading ``config.text_model_id`` on first use."""
        if self._text is None:
            self.set_text_tower(*load_clip_text_tower(self.config.text_model_id, self.config.text_revision))
        return self._text

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised frozen CLIP text embeddings ``[len(texts), projection_dim]`` (float32)."""
        if isinstance(texts, str) or not texts or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a non-empty list of strings")
        model, tokenizer = self.text_tower()
        device = self.logit_scale.device
        batch = tokenizer(texts, padding=True, truncation=True, max_length=self.config.max_text_length,
                          return_tensors="pt")
        model.to(device)
        out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
        return F.normalize(out.text_embeds.float(), dim=-1)

    def prompt_embeddings(self, class_names: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image_prompts, event_prompts)``, each ``[C, projection_dim]`` normalised, for ``class_names``
        (default ``config.class_names``). The tower is frozen, so they are cached per class list and device."""
        names = tuple(str(c) for c in (class_names if class_names is not None else self.config.class_names or ()))
        if not names:
            raise ValueError("class_names is empty: pass names or set config.class_names")
        if len(set(names)) != len(names):
            raise ValueError(f"class_names has duplicates: {list(names)}")
        key = (names, self.logit_scale.device)
        if key not in self._prompt_cache:
            cfg = self.config
            self._prompt_cache[key] = (
                self.encode_texts([cfg.image_prompt_template.format(c) for c in names]),
                self.encode_texts([cfg.event_prompt_template.format(c) for c in names]),
            )
        return self._prompt_cache[key]

    # -- forward ------------------------------------------------------------------------------------
    def forward(
        self,
        event_pixel_values: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> TripleModalImageOutput:
        """Event <-> image InfoNCE (with ``pixel_values``) plus, with ``labels`` (indices into
        ``config.class_names``), the event-text and image-text cross entropies (see the config)."""
        base = super().forward(event_pixel_values, pixel_values)
        out = TripleModalImageOutput(**dict(base.items()))
        if labels is None:
            return out
        cfg = self.config
        image_prompts, event_prompts = self.prompt_embeddings()
        n, num_classes = event_pixel_values.shape[0], event_prompts.shape[0]
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.long or labels.shape != (n,):
            got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise ValueError(f"labels must be int64 of shape ({n},), got {got}")
        if n and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"labels must lie in [0, {num_classes}): one per name in config.class_names")
        scale = out.logit_scale
        events = F.normalize(out.aligned_features, dim=-1)
        out.logits_per_class = scale * events @ event_prompts.to(events.dtype).T
        out.event_text_loss = F.cross_entropy(out.logits_per_class, labels)
        terms = [cfg.event_text_weight * out.event_text_loss]
        if out.target_embeddings is not None:
            images = F.normalize(out.target_embeddings, dim=-1)
            out.image_logits_per_class = scale * images @ image_prompts.to(images.dtype).T
            out.image_text_loss = F.cross_entropy(out.image_logits_per_class, labels)
            terms += [out.contrastive_loss, cfg.image_text_weight * out.image_text_loss]
        out.loss = torch.stack(terms).sum()
        return out

    @torch.no_grad()
    def zero_shot_classify(self, event_pixel_values: torch.Tensor, class_names: list[str] | None = None) -> ZeroShotOutput:
        """Classify event images by cosine similarity to the event prompts of ``class_names`` (default
        ``config.class_names``). ``event_pixel_values``: ``[B, 3, S, S]`` CLIP-preprocessed event images."""
        if not isinstance(event_pixel_values, torch.Tensor):
            raise TypeError(f"event_pixel_values must be a torch.Tensor [B, 3, H, W], got {type(event_pixel_values).__name__}")
        _, event_prompts = self.prompt_embeddings(class_names)
        was_training = self.training
        self.eval()
        try:
            out = super().forward(event_pixel_values)
        finally:
            self.train(was_training)
        events = F.normalize(out.aligned_features, dim=-1)
        logits = out.logit_scale * events @ event_prompts.to(events.dtype).T
        probs = logits.softmax(dim=-1)
        return ZeroShotOutput(probabilities=probs, labels=probs.argmax(dim=-1), logits=logits)


TripleModalImageAlignmentModel.register_for_auto_class("AutoModel")
