"""Config of the image-level triple-modal strategy: CEIA's LoRA vision tower plus class-prompt text terms."""

from __future__ import annotations

from ..contrastive.configuration_contrastive_image import ContrastiveImageAlignmentConfig


class TripleModalImageAlignmentConfig(ContrastiveImageAlignmentConfig):
    r"""
    Triple-modal training on images: event images go through a LoRA-tuned copy of the CLIP vision tower
    (as in :class:`ContrastiveImageAlignmentConfig`), RGB images through the frozen original, and class
    prompts through the frozen CLIP text tower.

    Loss: ``InfoNCE(event, image) + event_text_weight * CE(event vs event prompts, labels)
    + image_text_weight * CE(image vs image prompts, labels)``, all on cosine logits times the clamped,
    learnable logit scale. The image-text term involves only frozen embeddings: it trains nothing but the
    shared logit scale (keeping the temperature one at which frozen CLIP classifies the RGB frames well) and
    reports how well CLIP's image and text towers agree on the data's classes.

    The text tower and tokenizer are referenced, never stored: ``text_model_id`` (default: the
    CLIP checkpoint itself, which holds both towers) at ``text_revision`` is loaded on first use.

    Args:
        class_names: the classes the labels index (sorted scene names when trained by the loop).
        event_prompt_template, image_prompt_template: ``str.format`` templates with one ``{}`` for the class.
        event_text_weight, image_text_weight: weights (>= 0) of the two text terms.
        text_model_id: CLIP checkpoint whose ``CLIPTextModelWithProjection`` and tokenizer give the
            prompt embeddings; ``None`` means ``clip_model_id`` (and ``clip_revision``). Old name, still
            accepted: ``text_model_name_or_path``.
        text_revision: revision of ``text_model_id`` (``None``: ``clip_revision`` when the text tower is the
            CLIP checkpoint itself, else the default branch).
        max_text_length: tokenizer truncation length.
        Other arguments: see :class:`ContrastiveImageAlignmentConfig`.
    """

    model_type = "evalign_triple_modal_image"
    attribute_map = {**ContrastiveImageAlignmentConfig.attribute_map, "text_model_name_or_path": "text_model_id"}

    class_names: list[str] | None = None
    event_prompt_template: str = "an event camera image of a {}."
    image_prompt_template: str = "a photo of a {}."
    event_text_weight: float = 1.0
    image_text_weight: float = 1.0
    text_model_id: str | None = None
    text_revision: str | None = None
    max_text_length: int = 77

    def __post_init__(self, **kwargs):
        self._take_renamed(kwargs)
        if self.text_model_id is None:
            self.text_model_id = self.clip_model_id
            self.text_revision = self.text_revision or self.clip_revision
        self._check(isinstance(self.text_model_id, str) and bool(self.text_model_id),
                    "text_model_id", "a Hub repo id or a local directory of a CLIP model")
        self._check(self.text_revision is None or (isinstance(self.text_revision, str) and bool(self.text_revision)),
                    "text_revision", "a revision or None")
        for name in ("event_prompt_template", "image_prompt_template"):
            template = getattr(self, name)
            self._check(isinstance(template, str) and template.count("{}") == 1, name,
                        "a string with exactly one '{}' for the class name")
        for name in ("event_text_weight", "image_text_weight"):
            value = getattr(self, name)
            self._check(isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0, name, ">= 0")
        if self.class_names is not None:
            self._check(isinstance(self.class_names, (list, tuple)), "class_names", "a list of class names")
            self.class_names = [str(c) for c in self.class_names]
            self._check(len(set(self.class_names)) == len(self.class_names), "class_names", "unique names")
        self._check_positive_ints("max_text_length")
        super().__post_init__(**kwargs)


TripleModalImageAlignmentConfig.register_for_auto_class()
