"""Config of the image-level contrastive strategy (CEIA): a LoRA-tuned copy of the CLIP vision tower."""

from __future__ import annotations

import re

from ..configuration_utils import EvalignConfig

FEATURES = ("image_embeds", "patch_tokens")


class ContrastiveImageAlignmentConfig(EvalignConfig):
    r"""
    CEIA: event images go through a copy of the CLIP vision tower (+ its visual projection) with LoRA
    adapters; RGB images go through the frozen original. Symmetric InfoNCE pulls the pairs together.

    The frozen tower is referenced, never stored: ``clip_model_id`` + ``clip_revision`` are
    loaded when the model is built, and checkpoints hold only the LoRA weights and the logit scale.

    Args:
        clip_model_id: Hub id or local directory of a CLIP (or CLIP vision) checkpoint (old name, still
            accepted: ``clip_model_name_or_path``).
        clip_revision: revision (branch, tag or commit) of ``clip_model_id``; None: the default branch.
        lora_r, lora_alpha, lora_dropout: LoRA rank, scaling numerator (scale = alpha / r) and dropout.
        lora_target_modules: regex (full match on module names) choosing the adapted layers; the default
            touches only the vision tower's attention q/v projections of every block.
        temperature: initial temperature; the learnable logit scale starts at ``ln(1 / temperature)``.
        max_logit_scale: cap of the exponentiated logit scale (CLIP: 100).
        features: what is aligned. "image_embeds" (CEIA): the projected CLS embedding ``[B, P]``, the space
            CLIP's text prompts share. "patch_tokens": the patch tokens of ``token_layer`` (CLS dropped)
            ``[B, N, D]``, what EventGPT and Video-LLaVA feed their projector; the loss compares them
            flattened (their layout, which tells windows of one camera path apart).
        token_layer: hidden-state index of the "patch_tokens" features (-2: the penultimate layer, as
            EventGPT and Video-LLaVA use).
    """

    model_type = "evalign_contrastive_image"
    attribute_map = {"clip_model_name_or_path": "clip_model_id"}

    clip_model_id: str = "openai/clip-vit-large-patch14"
    clip_revision: str | None = None
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: str = r".*vision_model.*\.(q_proj|v_proj)"
    temperature: float = 0.07
    max_logit_scale: float = 100.0
    features: str = "image_embeds"
    token_layer: int = -2

    def __post_init__(self, **kwargs):
        self._take_renamed(kwargs)
        self._check(isinstance(self.clip_model_id, str) and bool(self.clip_model_id),
                    "clip_model_id", "a Hub repo id or a local directory")
        self._check(self.clip_revision is None or (isinstance(self.clip_revision, str) and bool(self.clip_revision)),
                    "clip_revision", "a revision or None")
        self._check(isinstance(self.lora_r, int) and self.lora_r > 0, "lora_r", "a positive int")
        self._check(self.lora_alpha > 0, "lora_alpha", "> 0")
        self._check(0.0 <= self.lora_dropout < 1.0, "lora_dropout", "a float in [0, 1)")
        try:
            re.compile(self.lora_target_modules)
            valid_regex = True
        except (re.error, TypeError):
            valid_regex = False
        self._check(valid_regex, "lora_target_modules", "a valid regular expression")
        self._check(self.temperature > 0, "temperature", "> 0")
        self._check(self.max_logit_scale >= 1.0 / self.temperature, "max_logit_scale", ">= 1 / temperature")
        self._check(self.features in FEATURES, "features", f"one of {FEATURES}")
        self._check(isinstance(self.token_layer, int) and self.token_layer != 0, "token_layer",
                    "a non-zero hidden-state index (0 is the patch embedding)")
        super().__post_init__(**kwargs)


ContrastiveImageAlignmentConfig.register_for_auto_class()
