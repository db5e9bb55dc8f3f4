"""Config of the triple-modal strategy: event <-> image, event <-> text, image-text consistency."""

from __future__ import annotations

from ..configuration_utils import EvalignConfig

PROJECTION_TYPES = ("linear", "mlp")
IMAGE_FEATURES = ("embeds", "tokens")


class TripleModalAlignmentConfig(EvalignConfig):
    r"""
    EventBind/E-CLIP-style alignment on pre-extracted features, with a frozen CLIP text tower.

    The shared space is the frozen CLIP space of width ``target_dim``: image features (CLIP image
    embeddings) are used as they are, text features come from the CLIP text tower's projection (its
    ``projection_dim`` must equal ``target_dim``), and a trainable head maps event features into it.
    Event prompts ("an event camera image of a {}") pass through a trainable residual text adapter
    (zero-initialised, EventBind's learnable event prompts); image prompts ("a photo of a {}") do not.

    Loss (each term a cross entropy on cosine logits times ``logit_scale``):
        ``event_text_weight * L(event, event-prompt text)``
        ``+ event_image_weight * L(event, image)``
        ``+ image_text_weight * L(image-prompt text, event-prompt text)``
        ``+ prompt_mse_weight * MSE(image-prompt text, event-prompt text)``
    EventBind's defaults are 1, 1, 1, 2 with a fixed scale of 100.

    Token mode (``image_features="tokens"``): event features are patch tokens ``[B, N, event_dim]`` and the
    image side is the RGB frame's patch tokens ``[B, N, image_token_dim]`` (what EventGPT's projector consumes).
    The event head maps tokens one by one (one map for every patch) and the event-image term compares the
    flattened token layouts, which tell windows of one camera path apart where a pooled embedding cannot; a
    linear text head on the mean aligned token gives the event embedding in the text space (``target_dim``)
    for the event-text term and zero-shot classification.

    Args:
        event_dim: width of the event features (input).
        target_dim: width of the CLIP image/text embeddings (the text space; the output space in embeds mode).
        image_features: "embeds" (image embeddings ``[B, target_dim]``) or "tokens" (see above).
        image_token_dim: width of the RGB patch tokens in token mode (default: ``event_dim``).
        projection_type: event head, "linear" or "mlp" (Linear-GELU-Linear with ``hidden_dim``).
        hidden_dim: hidden width of the "mlp" head.
        event_text_weight, event_image_weight, image_text_weight, prompt_mse_weight: loss weights (>= 0).
        logit_scale: multiplier of the cosine logits (1 / temperature), capped at ``max_logit_scale``.
        learnable_logit_scale: train ``log(logit_scale)`` (CLIP style) instead of keeping it fixed.
        max_logit_scale: cap of the logit scale (CLIP: 100).
        event_prompt_template, image_prompt_template: ``str.format`` templates with one ``{}`` for the class.
        class_names: default class names for training/zero-shot (may be empty; can be passed per call).
        text_model_id, text_revision: Hub id or local path (and revision) of the frozen CLIP model whose
            text tower (``CLIPTextModelWithProjection``) and tokenizer give text features; loaded on
            first use, never saved in the checkpoint.
        max_text_length: tokenizer truncation length.
        initializer_range: std of the normal init of the event head's weights.
    """

    model_type = "evalign_triple_modal"

    event_dim: int = 1024
    target_dim: int = 768
    projection_type: str = "mlp"
    hidden_dim: int = 1024
    image_features: str = "embeds"
    image_token_dim: int | None = None
    event_text_weight: float = 1.0
    event_image_weight: float = 1.0
    image_text_weight: float = 1.0
    prompt_mse_weight: float = 2.0
    logit_scale: float = 100.0
    learnable_logit_scale: bool = False
    max_logit_scale: float = 100.0
    event_prompt_template: str = "an event camera image of a {}."
    image_prompt_template: str = "a photo of a {}."
    class_names: list[str] | None = None
    text_model_id: str = "openai/clip-vit-large-patch14"
    text_revision: str | None = None
    max_text_length: int = 77
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        self._check_positive_ints("event_dim", "target_dim", "hidden_dim", "max_text_length")
        self._check(self.projection_type in PROJECTION_TYPES, "projection_type", f"one of {PROJECTION_TYPES}")
        self._check(self.image_features in IMAGE_FEATURES, "image_features", f"one of {IMAGE_FEATURES}")
        self._check(self.image_token_dim is None or (isinstance(self.image_token_dim, int) and self.image_token_dim > 0),
                    "image_token_dim", "a positive int or None")
        weights = ("event_text_weight", "event_image_weight", "image_text_weight", "prompt_mse_weight")
        for name in weights:
            self._check(getattr(self, name) >= 0, name, ">= 0")
        self._check(sum(getattr(self, n) for n in weights) > 0, "event_image_weight", "at least one loss weight > 0")
        self._check(self.max_logit_scale > 0, "max_logit_scale", "> 0")
        self._check(0 < self.logit_scale <= self.max_logit_scale, "logit_scale", "in (0, max_logit_scale]")
        for name in ("event_prompt_template", "image_prompt_template"):
            template = getattr(self, name)
            self._check(isinstance(template, str) and template.count("{}") == 1, name,
                        "a string with exactly one '{}' for the class name")
        if self.class_names is not None:
            self.class_names = [str(c) for c in self.class_names]
            self._check(len(set(self.class_names)) == len(self.class_names), "class_names", "unique names")
        self._check(isinstance(self.text_model_id, str) and bool(self.text_model_id), "text_model_id",
                    "a Hub repo id or a local path of a CLIP model")
        self._check(self.initializer_range > 0, "initializer_range", "> 0")
        super().__post_init__(**kwargs)


TripleModalAlignmentConfig.register_for_auto_class()
