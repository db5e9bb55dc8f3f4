"""CEIA image-level contrastive model: LoRA on a copy of the CLIP vision tower, the original tower frozen.

Checkpoints hold only what training changes (LoRA matrices + logit scale, a few MB for CLIP-L): the frozen
tower is rebuilt from ``config.clip_model_id`` at ``config.clip_revision`` whenever the model is
constructed, which is why :meth:`from_pretrained` is overridden (transformers would otherwise build the
model on the meta device and expect every weight in ``model.safetensors``).
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path

import torch
from torch import nn
from transformers import initialization as init

from ..losses import ClipLoss
from ..modeling_outputs import ContrastiveAlignmentOutput
from ..modeling_utils import EvalignPreTrainedModel, flatten_tokens
from ..utils.io_utils import atomic_directory
from .configuration_contrastive_image import ContrastiveImageAlignmentConfig

_HUB_KWARGS = ("cache_dir", "force_download", "proxies", "token", "revision", "local_files_only", "subfolder")


def load_clip_vision_tower(name_or_path: str, revision: str = "main"):
    """``CLIPVisionModelWithProjection`` (vision tower + visual projection) from a CLIP or CLIP-vision checkpoint."""
    from ..features.towers import load_clip_vision_tower as load_checked  # refuses anything but a CLIP tower

    return load_checked(name_or_path, revision=revision, with_projection=True, what="clip_model",
                                  frozen=False)


def _lora_wrap(tower: nn.Module, lora, get_peft_model) -> nn.Module:
    """``get_peft_model(tower, lora)`` without transformers' ``is_gradient_checkpointing`` FutureWarning.

    peft (0.21.2, the latest release) reads the deprecated ``PreTrainedModel.is_gradient_checkpointing``
    property in ``PeftModel.__init__`` to decide whether to prepare the model for activation checkpointing.
    Our towers never checkpoint (``is_activation_checkpointing`` is False, checked here), so that decision
    is "no" either way; only that one warning, from that one call, is filtered.
    """
    import warnings

    if tower.is_activation_checkpointing:
        raise ValueError("the CLIP tower has activation checkpointing enabled: the LoRA event encoder expects it off")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        return get_peft_model(tower, lora)


class ContrastiveImageAlignmentModel(EvalignPreTrainedModel):
    """Event images -> CLIP image-embedding space (width = the CLIP ``projection_dim``).

    ``forward(event_pixel_values [B, 3, S, S], pixel_values [B, 3, S, S] | None)``: ``S`` is the CLIP image
    size; both inputs are CLIP-preprocessed (normalised) images. Returns a ``ContrastiveAlignmentOutput``
    whose ``aligned_features`` ``[B, P]`` are the event embeddings (``features="patch_tokens"``: the event
    patch tokens ``[B, N, D]``) and, when ``pixel_values`` is given, ``target_embeddings`` ``[B, P]`` of the
    frozen tower (patch tokens: flattened ``[B, N * D]``) and the symmetric InfoNCE ``loss`` (negatives
    gathered across processes).

    Args:
        config: the strategy config.
        clip_model: an already loaded ``CLIPVisionModelWithProjection`` to use instead of loading
            ``config.clip_model_id`` (it must be that checkpoint: only the reference is saved).
    """

    config_class = ContrastiveImageAlignmentConfig
    main_input_name = "event_pixel_values"

    def __init__(self, config: ContrastiveImageAlignmentConfig, clip_model: nn.Module | None = None):
        super().__init__(config)
        self.logit_scale = nn.Parameter(torch.empty(()))
        self.loss_fn = ClipLoss(max_logit_scale=config.max_logit_scale)
        self.post_init()
        # The towers arrive with pretrained weights: attached after post_init so weight initialisation never
        # touches them (nor the zero-initialised LoRA B matrices).
        from peft import LoraConfig, get_peft_model

        if clip_model is None:
            clip_model = load_clip_vision_tower(config.clip_model_id, config.clip_revision)
        target = clip_model
        event = copy.deepcopy(target)
        target.requires_grad_(False)
        target.eval()
        self.target_encoder = target
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=config.lora_target_modules,
            bias="none",
        )
        self.event_encoder = _lora_wrap(event, lora, get_peft_model)

    def _init_weights(self, module):
        if module is self:
            init.constant_(self.logit_scale, math.log(1.0 / self.config.temperature))

    def train(self, mode: bool = True):
        super().train(mode)
        self.target_encoder.eval()  # frozen: dropout/normalisation stay in inference mode
        return self

    def forward(
        self,
        event_pixel_values: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        **kwargs,
    ) -> ContrastiveAlignmentOutput:
        for name, x in (("event_pixel_values", event_pixel_values), ("pixel_values", pixel_values)):
            if x is not None and (not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3):
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(f"{name} has shape {shape}: expected [B, 3, H, W] CLIP-preprocessed images")
        event_embeds = self.encode(self.event_encoder, event_pixel_values)
        scale = self.loss_fn.scale(self.logit_scale)
        if pixel_values is None:
            return ContrastiveAlignmentOutput(aligned_features=event_embeds, logit_scale=scale)
        if pixel_values.shape[0] != event_pixel_values.shape[0]:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[0]} images but event_pixel_values has {event_pixel_values.shape[0]}"
            )
        with torch.no_grad():
            target_embeds = self.pool_tokens(self.encode(self.target_encoder, pixel_values))
        loss = self.loss_fn(self.pool_tokens(event_embeds), target_embeds, self.logit_scale)
        ev = nn.functional.normalize(self.pool_tokens(event_embeds), dim=-1)
        tg = nn.functional.normalize(target_embeds, dim=-1)
        return ContrastiveAlignmentOutput(
            loss=loss,
            contrastive_loss=loss,
            aligned_features=event_embeds,
            target_embeddings=target_embeds,
            logits_per_event=scale * ev @ tg.T,
            logit_scale=scale,
        )

    def encode(self, tower: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        """``config.features`` of ``tower``: ``image_embeds`` ``[B, P]`` or the patch tokens of
        ``config.token_layer`` ``[B, N, D]`` (CLS dropped)."""
        if self.config.features == "image_embeds":
            return tower(pixel_values=pixel_values).image_embeds
        hidden = tower(pixel_values=pixel_values, output_hidden_states=True).hidden_states
        return hidden[self.config.token_layer][:, 1:]

    # the rows the loss and retrieval compare: embeddings as they are, patch tokens flattened
    pool_tokens = staticmethod(flatten_tokens)

    # --- what a checkpoint holds -------------------------------------------------------------------------
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """LoRA matrices and the logit scale (the parameters that require grad), nothing of the frozen CLIP."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in names}

    def load_trainable_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load :meth:`trainable_state_dict` output; KeyError naming missing/unexpected keys on a mismatch."""
        expected = set(self.trainable_state_dict())
        missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
        if missing or unexpected:
            raise KeyError(
                f"{type(self).__name__}: checkpoint does not match this LoRA layout: missing {missing[:5]}"
                f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
            )
        self.load_state_dict(state_dict, strict=False)

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """``config.json`` + ``model.safetensors`` with the trainable state only (+ bundled module files)."""
        kwargs.setdefault("state_dict", self.trainable_state_dict())
        return super().save_pretrained(save_directory, *args, **kwargs)

    def save_adapter(self, directory: str | os.PathLike) -> Path:
        """peft's ``save_pretrained`` of the LoRA adapter (adapter_config.json + adapter_model.safetensors)."""
        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            self.event_encoder.save_pretrained(str(tmp))
        return directory

    def merged_event_encoder(self) -> nn.Module:
        """A plain ``CLIPVisionModelWithProjection`` with the LoRA update merged into its weights (a copy)."""
        return copy.deepcopy(self.event_encoder).merge_and_unload()

    def export_merged(self, directory: str | os.PathLike) -> Path:
        """Save :meth:`merged_event_encoder` with ``save_pretrained`` (loads without peft or evalign)."""
        directory = Path(directory)
        merged = self.merged_event_encoder()
        with atomic_directory(directory) as tmp:
            merged.save_pretrained(str(tmp))
        return directory

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, config=None, clip_model=None, **kwargs):
        """Rebuild the model (loading the referenced CLIP) and load the saved LoRA weights and logit scale."""
        from safetensors.torch import load_file
        from transformers.utils import cached_file

        hub_kwargs = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
        if config is None:
            config = cls.config_class.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        for key, value in kwargs.items():  # config overrides, as transformers applies them (e.g. a local tower)
            if key not in _HUB_KWARGS and key != "dtype" and hasattr(config, key):
                setattr(config, key, value)
        model = cls(config, clip_model=clip_model)
        weights = cached_file(pretrained_model_name_or_path, "model.safetensors", **hub_kwargs)
        model.load_trainable_state_dict(load_file(weights))
        dtype = kwargs.get("dtype")
        if isinstance(dtype, torch.dtype):
            model.to(dtype)
        return model.eval()


ContrastiveImageAlignmentModel.register_for_auto_class("AutoModel")
