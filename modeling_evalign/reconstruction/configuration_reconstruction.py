"""Configuration of the reconstruction-bridging strategy: events -> E2VID/FireNet frames -> frozen CLIP."""

from __future__ import annotations

from typing import Any

from ..configuration_utils import EvalignConfig
from .configuration_e2vid import E2VIDConfig
from .configuration_firenet import FireNetConfig

RECONSTRUCTION_CONFIGS = {"evalign_firenet": FireNetConfig, "evalign_e2vid": E2VIDConfig}


class ReconstructionAlignmentConfig(EvalignConfig):
    """Zero-paired-data baseline: no trained adapter, the "alignment" is reconstruction + the CLIP tower.

    reconstruction_config: the reconstruction net's config as a dict with ``model_type``
        "evalign_firenet" (default) or "evalign_e2vid"; its weights live in this checkpoint.
    clip_model_id / clip_revision: the frozen CLIP vision tower (Hub id or local path; old name, still
        accepted: ``clip_model_name_or_path``),
        loaded with ``CLIPVisionModel.from_pretrained`` on first use and never saved in the checkpoint.
    clip_config: TEST/DEMO ONLY: a ``CLIPVisionConfig`` (or ``CLIPConfig``) dict; the tower is then
        built with random weights from ``clip_init_seed`` instead of being downloaded.
    feature_layer: hidden-state index of the token features (-1 = last layer, -2 = penultimate as
        Video-LLaVA uses); the pooled feature is always CLIP's ``pooler_output``.
    events_per_step_fraction: a window is split into recurrent steps of ``fraction * H * W`` events
        (E2VID's 0.35); 0 = one step per window.
    max_steps_per_window: cap on the recurrent steps of one window (0 = no cap): a window with more
        events is split into this many equal steps instead, bounding the cost of dense windows.
    voxel_normalize: E2VID normalisation of the voxel grid (non-zero voxels to mean 0, std 1).
    percentile_low / percentile_high: robust min/max (in %) used to rescale each frame to [0, 1].
    event_dim: the voxel bins (the input is events, not features); always the net's num_bins.
    target_dim: CLIP vision hidden size (filled from clip_config, or when the tower is loaded).
    """

    model_type = "evalign_reconstruction"
    attribute_map = {"clip_model_name_or_path": "clip_model_id"}

    reconstruction_config: dict[str, Any] | None = None
    clip_model_id: str | None = "openai/clip-vit-large-patch14-336"
    clip_revision: str | None = None
    clip_config: dict[str, Any] | None = None
    clip_init_seed: int = 0
    feature_layer: int = -1
    events_per_step_fraction: float = 0.35
    max_steps_per_window: int = 0
    voxel_normalize: bool = True
    percentile_low: float = 1.0
    percentile_high: float = 99.0
    event_dim: int | None = None
    target_dim: int | None = None

    def __post_init__(self, **kwargs):
        self._take_renamed(kwargs)
        if self.reconstruction_config is None:
            self.reconstruction_config = {"model_type": "evalign_firenet"}
        if hasattr(self.reconstruction_config, "to_dict"):
            self.reconstruction_config = self.reconstruction_config.to_dict()
        rc = self.reconstruction_config
        self._check(isinstance(rc, dict) and rc.get("model_type") in RECONSTRUCTION_CONFIGS,
                    "reconstruction_config", f"a dict with model_type in {sorted(RECONSTRUCTION_CONFIGS)}")
        sub = self.reconstruction_sub_config()
        self._check(self.event_dim in (None, sub.num_bins), "event_dim", f"the net's num_bins ({sub.num_bins})")
        self.event_dim = sub.num_bins
        self._check(self.clip_model_id is not None or self.clip_config is not None,
                    "clip_model_id", "a Hub id / path, or clip_config (test only)")
        if self.clip_config is not None:
            vision = self.clip_vision_config()
            self._check(self.target_dim in (None, vision.hidden_size), "target_dim",
                        f"the CLIP vision hidden size ({vision.hidden_size})")
            self.target_dim = vision.hidden_size
        self._check(isinstance(self.feature_layer, int), "feature_layer", "an int hidden-state index")
        self._check(self.events_per_step_fraction >= 0, "events_per_step_fraction", ">= 0 (0 = one step)")
        self._check(isinstance(self.max_steps_per_window, int) and self.max_steps_per_window >= 0,
                    "max_steps_per_window", "an int >= 0 (0 = no cap)")
        self._check(0 <= self.percentile_low < self.percentile_high <= 100, "percentile_low",
                    "0 <= percentile_low < percentile_high <= 100")
        super().__post_init__(**kwargs)

    def reconstruction_sub_config(self):
        """The reconstruction net's config object (FireNetConfig or E2VIDConfig)."""
        rc = dict(self.reconstruction_config)
        cls = RECONSTRUCTION_CONFIGS[rc.pop("model_type")]
        return cls.from_dict({"model_type": cls.model_type, **rc})

    def clip_vision_config(self):
        """The test-only CLIPVisionConfig built from ``clip_config`` (None when the tower is a Hub id)."""
        if self.clip_config is None:
            return None
        from transformers import CLIPVisionConfig

        cfg = dict(self.clip_config)
        cfg = dict(cfg.get("vision_config", cfg))
        cfg.pop("model_type", None)
        return CLIPVisionConfig(**cfg)
