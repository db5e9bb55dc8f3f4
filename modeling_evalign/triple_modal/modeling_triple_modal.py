"""Triple-modal alignment (EventBind/E-CLIP style) on pre-extracted event and CLIP image features."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.utils import ModelOutput

from ..losses import ClipLoss, mse_loss
from ..modeling_outputs import AlignmentOutput
from ..modeling_utils import EvalignPreTrainedModel, flatten_tokens
from .configuration_triple_modal import TripleModalAlignmentConfig


@dataclass
class TripleModalOutput(AlignmentOutput):
    r"""
    loss (`torch.Tensor` of shape `()`, *optional*): weighted sum of the terms below that were computed.
    aligned_features (`torch.Tensor` of shape `(batch_size, target_dim)`): event features in the CLIP space
        (not normalised); in token mode the aligned patch tokens `(batch_size, num_tokens, image_token_dim)`.
    text_embeddings (`torch.Tensor` of shape `(batch_size, target_dim)`): the event embeddings the text terms
        compare (= `aligned_features` in embeds mode; the text head of the mean aligned token in token mode).
    event_image_loss (`torch.Tensor` of shape `()`, *optional*): symmetric InfoNCE event <-> image
        (when `target_features` is given).
    event_text_loss (`torch.Tensor` of shape `()`, *optional*): with `labels`, cross entropy of the event
        -> class (event-prompt) logits; with `caption_features`, symmetric InfoNCE event <-> caption.
    image_text_loss (`torch.Tensor` of shape `()`, *optional*): symmetric InfoNCE image-prompt text <->
        event-prompt text (row i of both is the same class / caption).
    prompt_mse_loss (`torch.Tensor` of shape `()`, *optional*): MSE between the normalised image-prompt
        and event-prompt text embeddings.
    logits_per_event (`torch.Tensor` of shape `(batch_size, num_classes)`, *optional*): scaled cosine
        similarities of events against the event-prompt class embeddings (with `labels`).
    logit_scale (`torch.Tensor` of shape `()`): the (clamped) logit scale used.
    """

    text_embeddings: torch.Tensor | None = None
    event_image_loss: torch.Tensor | None = None
    event_text_loss: torch.Tensor | None = None
    image_text_loss: torch.Tensor | None = None
    prompt_mse_loss: torch.Tensor | None = None
    logits_per_event: torch.Tensor | None = None
    logit_scale: torch.Tensor | None = None


@dataclass
class ZeroShotOutput(ModelOutput):
    r"""
    probabilities (`torch.Tensor` of shape `(batch_size, num_classes)`): softmax over the class prompts.
    labels (`torch.Tensor` of shape `(batch_size,)`, int64): index of the most probable class.
    logits (`torch.Tensor` of shape `(batch_size, num_classes)`): scaled cosine similarities.
    """

    probabilities: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    logits: torch.Tensor | None = None


class TripleModalAlignmentModel(EvalignPreTrainedModel):
    """Event features ``[B, event_dim]`` -> CLIP space ``[B, target_dim]``, trained against images and text.

    Trainable: the event head and the event-prompt text adapter (a residual linear map, zero at init,
    so event prompts start equal to the frozen tower's embeddings), plus the logit scale when
    ``learnable_logit_scale``. The CLIP text tower is frozen and kept OUTSIDE the module tree: it is
    neither in ``state_dict`` nor in the checkpoint; ``text_model_id`` names it and it is loaded on
    first use (or given with :meth:`set_text_tower`).
    """

    config_class = TripleModalAlignmentConfig

    def __init__(self, config: TripleModalAlignmentConfig):
        super().__init__(config)
        d_in, d = config.event_dim, config.target_dim
        d_out = self.image_dim  # the image side: embeddings (target_dim) or patch tokens (image_token_dim)
        if config.projection_type == "linear":
            self.event_head = nn.Sequential(nn.Linear(d_in, d_out))
        else:
            self.event_head = nn.Sequential(nn.Linear(d_in, config.hidden_dim), nn.GELU(), nn.Linear(config.hidden_dim, d_out))
        self.text_head = nn.Linear(d_out, d) if self.token_mode else None
        self.event_prompt_adapter = nn.Linear(d, d)
        log_scale = torch.tensor(math.log(config.logit_scale))
        if config.learnable_logit_scale:
            self.logit_scale_log = nn.Parameter(log_scale)
        else:
            self.register_buffer("logit_scale_log", log_scale)
        self.clip_loss = ClipLoss(max_logit_scale=config.max_logit_scale)
        object.__setattr__(self, "_text_tower", None)  # plain attribute: not a submodule, never saved
        object.__setattr__(self, "_tokenizer", None)
        object.__setattr__(self, "_prompt_cache", {})
        self.post_init()

    def _init_weights(self, module):
        if module is getattr(self, "event_prompt_adapter", None):
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            init.zeros_(module.bias)
        elif module is self:
            init.constant_(self.logit_scale_log, math.log(self.config.logit_scale))

    # -- text tower ---------------------------------------------------------------------------------
    def set_text_tower(self, text_model: nn.Module, tokenizer) -> None:
        """Use ``text_model`` (a ``CLIPTextModelWithProjection``) and ``tokenizer`` instead of loading
        ``config.text_model_id``. The tower is frozen and put in eval mode."""
        proj = getattr(getattr(text_model, "config", None), "projection_dim", None)
        if proj != self.config.target_dim:
            raise ValueError(
                f"text tower projection_dim={proj}: expected target_dim={self.config.target_dim} "
                "(text and image embeddings must share the CLIP space)"
            )
        text_model.requires_grad_(False).eval()
        object.__setattr__(self, "_text_tower", text_model)
        object.__setattr__(self, "_tokenizer", tokenizer)
        self._prompt_cache.clear()

    def text_tower(self):
        """``(text_model, tokenizer)``, loading ``config.text_model_id`` on first use."""
        if self._text_tower is None:
            from transformers import AutoTokenizer, CLIPTextModelWithProjection

            cfg = self.config
            model = CLIPTextModelWithProjection.from_pretrained(cfg.text_model_id, revision=cfg.text_revision)
            tokenizer = AutoTokenizer.from_pretrained(cfg.text_model_id, revision=cfg.text_revision)
            self.set_text_tower(model, tokenizer)
        return self._text_tower, self._tokenizer

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Frozen CLIP text embeddings ``[len(texts), target_dim]`` (projected, not normalised)."""
        if isinstance(texts, str) or not texts or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a non-empty list of strings")
        model, tokenizer = self.text_tower()
        device = self.logit_scale_log.device
        batch = tokenizer(
            texts, padding=True, truncation=True, max_length=self.config.max_text_length, return_tensors="pt"
        )
        model.to(device)
        out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
        return out.text_embeds.float()

    def prompt_features(self, class_names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen embeddings of the image prompts and of the event prompts for ``class_names``,
        each ``[C, target_dim]`` (cached per class list; the event adapter is NOT applied here)."""
        names = tuple(str(c) for c in class_names)
        if not names:
            raise ValueError("class_names is empty: pass names or set config.class_names")
        if len(set(names)) != len(names):
            raise ValueError(f"class_names has duplicates: {list(names)}")
        key = (names, self.logit_scale_log.device)
        if key not in self._prompt_cache:
            cfg = self.config
            image = self.encode_texts([cfg.image_prompt_template.format(c) for c in names])
            event = self.encode_texts([cfg.event_prompt_template.format(c) for c in names])
            self._prompt_cache[key] = (image, event)
        return self._prompt_cache[key]

    # -- embedding ----------------------------------------------------------------------------------
    @property
    def token_mode(self) -> bool:
        return self.config.image_features == "tokens"

    @property
    def image_dim(self) -> int:
        """Width of the image features the event-image term compares."""
        cfg = self.config
        return (cfg.image_token_dim or cfg.event_dim) if self.token_mode else cfg.target_dim

    def align(self, event_features: torch.Tensor) -> torch.Tensor:
        """``[B, event_dim]`` -> ``[B, target_dim]`` event embeddings in the CLIP space; token mode: patch tokens
        ``[B, N, event_dim]`` -> ``[B, N, image_token_dim]``, token by token."""
        if self.token_mode and not (isinstance(event_features, torch.Tensor) and event_features.dim() == 3):
            shape = tuple(event_features.shape) if isinstance(event_features, torch.Tensor) else type(event_features).__name__
            raise ValueError(f"event_features has shape {shape}: token mode expects patch tokens "
                             f"[B, N, {self.config.event_dim}]")
        self._check_features(event_features, "event_features", self.config.event_dim, allow_tokens=self.token_mode)
        return self.event_head(event_features)

    def text_embeddings(self, aligned: torch.Tensor) -> torch.Tensor:
        """Aligned event features -> their embedding in the text space ``[B, target_dim]``."""
        return self.text_head(aligned.mean(dim=1)) if self.token_mode else aligned

    # the rows the loss and retrieval compare: embeddings as they are, patch tokens flattened
    pool_tokens = staticmethod(flatten_tokens)

    def adapt_event_prompts(self, prompt_features: torch.Tensor) -> torch.Tensor:
        """Event-prompt text embeddings after the trainable residual adapter ``x + A x + b``."""
        return prompt_features + self.event_prompt_adapter(prompt_features)

    def scale(self) -> torch.Tensor:
        return self.clip_loss.scale(self.logit_scale_log)

    def forward(
        self,
        event_features: torch.Tensor,
        target_features: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        image_prompt_features: torch.Tensor | None = None,
        event_prompt_features: torch.Tensor | None = None,
        caption_features: torch.Tensor | None = None,
        **kwargs,
    ) -> TripleModalOutput:
        """Embed events and compute the weighted loss terms whose inputs are given.

        Args:
            event_features: ``[B, event_dim]``.
            target_features: ``[B, target_dim]`` CLIP image embeddings of the paired frames.
            labels: ``[B]`` int64 class indices into the prompt features (class mode).
            image_prompt_features, event_prompt_features: ``[C, target_dim]`` frozen prompt embeddings;
                computed from ``config.class_names`` with the text tower when omitted in class mode.
            caption_features: ``[B, target_dim]`` frozen embeddings of one caption per example (caption
                mode, instead of ``labels``): event <-> caption InfoNCE, and the image-text term between
                the captions and their adapted (event-prompt) versions.
        """
        cfg = self.config
        aligned = self.align(event_features)
        text_emb = self.text_embeddings(aligned)
        scale = self.scale()
        out = TripleModalOutput(aligned_features=aligned, text_embeddings=text_emb, logit_scale=scale)
        terms: list[torch.Tensor] = []
        if labels is not None and caption_features is not None:
            raise ValueError("pass labels (class prompts) or caption_features, not both")
        if target_features is not None:
            self._check_features(target_features, "target_features", self.image_dim, allow_tokens=self.token_mode)
            if target_features.shape[:-1] != aligned.shape[:-1]:
                raise ValueError(f"target_features has shape {tuple(target_features.shape)}: expected "
                                 f"{tuple(aligned.shape[:-1]) + (self.image_dim,)} (one per event row / token)")
            out.event_image_loss = self.clip_loss(self.pool_tokens(aligned), self.pool_tokens(target_features),
                                                  self.logit_scale_log)
            terms.append(cfg.event_image_weight * out.event_image_loss)
        image_text = event_text = None
        if labels is not None:
            if image_prompt_features is None or event_prompt_features is None:
                image_prompt_features, event_prompt_features = self.prompt_features(cfg.class_names or [])
            for name, t in (("image_prompt_features", image_prompt_features), ("event_prompt_features", event_prompt_features)):
                self._check_features(t, name, cfg.target_dim, allow_tokens=False)
            if image_prompt_features.shape != event_prompt_features.shape:
                raise ValueError("image_prompt_features and event_prompt_features must have the same shape [C, D]")
            num_classes = event_prompt_features.shape[0]
            if labels.dim() != 1 or labels.shape[0] != aligned.shape[0] or labels.dtype != torch.long:
                raise ValueError(f"labels must be int64 of shape [{aligned.shape[0]}], got {labels.dtype} {tuple(labels.shape)}")
            if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
                raise ValueError(f"labels must lie in [0, {num_classes}) (one per class prompt)")
            event_text = self.adapt_event_prompts(event_prompt_features)
            image_text = image_prompt_features
            logits = scale * F.normalize(text_emb, dim=-1) @ F.normalize(event_text, dim=-1).T
            out.logits_per_event = logits
            out.event_text_loss = F.cross_entropy(logits, labels)
        elif caption_features is not None:
            self._check_features(caption_features, "caption_features", cfg.target_dim, allow_tokens=False)
            if caption_features.shape[0] != aligned.shape[0]:
                raise ValueError(f"caption_features has {caption_features.shape[0]} rows: expected {aligned.shape[0]}")
            event_text = self.adapt_event_prompts(caption_features)
            image_text = caption_features
            out.event_text_loss = self.clip_loss(text_emb, event_text, self.logit_scale_log)
        if out.event_text_loss is not None:
            terms.append(cfg.event_text_weight * out.event_text_loss)
            if image_text.shape[0] > 1:  # a contrastive term needs at least two rows
                out.image_text_loss = self.clip_loss(image_text, event_text, self.logit_scale_log)
                terms.append(cfg.image_text_weight * out.image_text_loss)
            out.prompt_mse_loss = mse_loss(F.normalize(image_text, dim=-1), F.normalize(event_text, dim=-1))
            terms.append(cfg.prompt_mse_weight * out.prompt_mse_loss)
        if terms:
            out.loss = torch.stack(terms).sum()
        return out

    @torch.no_grad()
    def zero_shot_classify(self, events_or_features: torch.Tensor, class_names: list[str] | None = None) -> ZeroShotOutput:
        """Classify events by cosine similarity to the (adapted) event prompts of ``class_names``.

        ``events_or_features``: ``[B, event_dim]`` event features (raw events must first go through the
        feature extractor). ``class_names`` default to ``config.class_names``.
        """
        if not isinstance(events_or_features, torch.Tensor):
            raise TypeError(
                f"zero_shot_classify needs event features as a torch.Tensor [B, {self.config.event_dim}], got "
                f"{type(events_or_features).__name__}; extract features from raw events first"
            )
        names = list(class_names) if class_names is not None else list(self.config.class_names or [])
        _, event_prompts = self.prompt_features(names)
        aligned = F.normalize(self.text_embeddings(self.align(events_or_features)), dim=-1)
        text = F.normalize(self.adapt_event_prompts(event_prompts), dim=-1)
        logits = self.scale() * aligned @ text.T
        probs = logits.softmax(dim=-1)
        return ZeroShotOutput(probabilities=probs, labels=probs.argmax(dim=-1), logits=logits)


TripleModalAlignmentModel.register_for_auto_class("AutoModel")

# the product brief's name (transformers style is *Model)
TripleModalAlignmentModule = TripleModalAlignmentModel
