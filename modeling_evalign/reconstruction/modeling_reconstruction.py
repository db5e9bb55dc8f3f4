"""Reconstruction bridging: events -> voxel grids -> E2VID/FireNet (recurrent) -> robust rescale ->
CLIP preprocessing -> frozen CLIP vision tower -> pooled and token features. Needs zero paired data.

The CLIP tower is referenced by id/path in the config, loaded on first use and kept OUT of the
registered submodules, so ``save_pretrained`` writes only the reconstruction net's weights.

For the pipeline: :func:`encode_windows` turns an iterable of event windows into ``[N, D]`` features,
carrying the recurrent state across consecutive windows of one sequence.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..events.representations import voxel_grid
from ..features.clip_preprocessing import clip_preprocess_tensor
from ..modeling_utils import EvalignPreTrainedModel
from .configuration_reconstruction import ReconstructionAlignmentConfig
from .modeling_e2vid import E2VIDModel
from .modeling_firenet import FireNetModel
from .outputs import ReconstructionAlignmentOutput

RECONSTRUCTION_MODELS = {"evalign_firenet": FireNetModel, "evalign_e2vid": E2VIDModel}


def robust_rescale(images: torch.Tensor, low: float = 1.0, high: float = 99.0) -> torch.Tensor:
    """Map each image's ``low``/``high`` percentiles (in %) to 0/1 and clip: ``[B, C, H, W]`` -> same, in [0, 1]."""
    flat = images.reshape(images.shape[0], -1).float()
    q = torch.quantile(flat, torch.tensor([low / 100, high / 100], device=flat.device), dim=1)
    lo, hi = q[0].view(-1, 1, 1, 1), q[1].view(-1, 1, 1, 1)
    return ((images - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)


def _window_events(window: Any) -> tuple[Any, Any, Any, Any]:
    """x, y, t, p of a window given as a mapping, an object with attributes, or a 4-tuple."""
    if isinstance(window, (tuple, list)) and len(window) == 4:
        return tuple(window)
    try:
        if isinstance(window, dict) or hasattr(window, "keys"):
            return window["x"], window["y"], window["t"], window["p"]
        return window.x, window.y, window.t, window.p
    except (KeyError, AttributeError):
        raise KeyError(
            f"event window {type(window).__name__} has no x, y, t, p: expected a mapping or object with "
            "those fields, or an (x, y, t, p) tuple"
        ) from None


class ReconstructionAlignmentModel(EvalignPreTrainedModel):
    """Events -> reconstructed frames -> frozen CLIP features (see :class:`ReconstructionAlignmentConfig`).

    Tensor interface: ``forward(voxel, prev_states=None, target_features=None)`` with ``voxel``
    ``[B, num_bins, H, W]`` (one step) or ``[B, S, num_bins, H, W]`` (S recurrent steps, features of the
    last) -> :class:`ReconstructionAlignmentOutput`. ``event_features`` is accepted as an alias of
    ``voxel`` (the other strategies' input name); ``target_features`` ``[B, D]`` (compared with the pooled
    features) or ``[B, T, D]`` (with the tokens) adds evaluation losses. Event interface (one sequence at a time, state kept on the
    module): :meth:`reset`, :meth:`encode_window`, :meth:`encode_stream`.
    """

    config_class = ReconstructionAlignmentConfig
    main_input_name = "voxel"

    def __init__(self, config: ReconstructionAlignmentConfig):
        super().__init__(config)
        sub = config.reconstruction_sub_config()
        self.reconstructor = RECONSTRUCTION_MODELS[sub.model_type](sub)
        self.__dict__["_clip_tower"] = None  # plain attribute: not a submodule, never in the state dict
        self._stream_states = None
        self.post_init()

    def _init_weights(self, module):
        self.reconstructor._init_weights(module)

    # ---- frozen CLIP tower --------------------------------------------------------------------------
    @property
    def clip_tower(self):
        """The frozen ``CLIPVisionModel`` (loaded on first access; eval mode, no gradients)."""
        if self.__dict__["_clip_tower"] is None:
            self.set_clip_tower(self._load_clip_tower())
        return self.__dict__["_clip_tower"]

    def set_clip_tower(self, tower) -> None:
        """Use an already loaded ``CLIPVisionModel`` (e.g. shared with another strategy)."""
        hidden = tower.config.hidden_size
        if self.config.target_dim not in (None, hidden):
            raise ValueError(f"CLIP tower hidden size {hidden} != config.target_dim={self.config.target_dim}")
        self.config.target_dim = hidden
        tower.eval().requires_grad_(False)
        self.__dict__["_clip_tower"] = tower

    def _load_clip_tower(self):
        from transformers import CLIPVisionModel

        vision = self.config.clip_vision_config()
        if vision is not None:  # test/demo only: random tower from a fixed seed
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.config.clip_init_seed)
                return CLIPVisionModel(vision)
        from ..features.towers import (
            load_clip_vision_tower,  # refuses anything but a complete CLIP vision tower
        )

        return load_clip_vision_tower(self.config.clip_model_id, revision=self.config.clip_revision,
                                      what="clip_model_id", frozen=False)

    # ---- tensor interface ---------------------------------------------------------------------------
    def forward(self, voxel: torch.Tensor | None = None, prev_states=None, *, event_features=None,
                target_features: torch.Tensor | None = None) -> ReconstructionAlignmentOutput:
        if voxel is None:
            voxel = event_features
        if not isinstance(voxel, torch.Tensor) or voxel.dim() not in (4, 5):
            shape = tuple(voxel.shape) if isinstance(voxel, torch.Tensor) else type(voxel).__name__
            raise ValueError(f"voxel has shape {shape}: expected [B, num_bins, H, W] or [B, S, num_bins, H, W]")
        steps = voxel.unsqueeze(1) if voxel.dim() == 4 else voxel
        states = prev_states
        for s in range(steps.shape[1]):
            out = self.reconstructor(steps[:, s], prev_states=states)
            states = out.states
        result = self._features(out.image, states)
        if target_features is not None:
            pred = result.aligned_features if target_features.dim() == 2 else result.token_features
            if not isinstance(target_features, torch.Tensor) or target_features.shape != pred.shape:
                raise ValueError(f"target_features has shape {tuple(target_features.shape)}: expected "
                                 f"{tuple(result.aligned_features.shape)} (pooled) or {tuple(result.token_features.shape)} (tokens)")
            target = target_features.to(pred.dtype)
            result.mse_loss = F.mse_loss(pred, target)
            result.cosine_loss = (1 - F.cosine_similarity(pred, target, dim=-1)).mean()
            result.loss = result.mse_loss
        return result

    def _features(self, image: torch.Tensor, states) -> ReconstructionAlignmentOutput:
        images = robust_rescale(image, self.config.percentile_low, self.config.percentile_high)
        tower = self.clip_tower
        if next(tower.parameters()).device != images.device:
            tower.to(images.device)
        pixel_values = clip_preprocess_tensor(images.expand(-1, 3, -1, -1), tower.config.image_size)
        want_hidden = self.config.feature_layer != -1
        clip_out = tower(pixel_values=pixel_values.to(next(tower.parameters()).dtype), output_hidden_states=want_hidden)
        tokens = clip_out.hidden_states[self.config.feature_layer] if want_hidden else clip_out.last_hidden_state
        return ReconstructionAlignmentOutput(
            aligned_features=clip_out.pooler_output, token_features=tokens, images=images,
            pixel_values=pixel_values, states=states,
        )

    # ---- event interface ----------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the recurrent state: call at the start of every sequence."""
        self._stream_states = None

    def event_steps(self, x, y, t, p, height: int, width: int) -> torch.Tensor:
        """Voxel grids ``[S, num_bins, height, width]`` of one window split into S = max(1, n // N) steps of
        N = ``events_per_step_fraction * height * width`` events (the last step also takes the remainder);
        with ``max_steps_per_window`` = M > 0 and S > M, M steps of n // M events instead."""
        num_bins = self.config.event_dim
        if any(isinstance(a, torch.Tensor) for a in (x, y, t, p)):
            # torch has no min/max for uint16 (DSEC's x/y dtype): widen before voxelising
            x, y, t, p = (torch.as_tensor(a).to(torch.int64) for a in (x, y, t, p))
        else:
            x, y, t, p = (np.asarray(a) for a in (x, y, t, p))
        n = int(x.shape[0])
        per = int(round(self.config.events_per_step_fraction * height * width))
        cap = self.config.max_steps_per_window
        if cap and per > 0 and n // per > cap:
            per = n // cap  # exactly `cap` steps, the last one taking the remainder
        # full steps of `per` events; the remainder (< per) joins the last one, so no step is tiny
        bounds = [0, n] if per <= 0 or n < 2 * per else [*range(0, n - per + 1, per), n]
        grids = [
            voxel_grid(x[a:b], y[a:b], t[a:b], p[a:b], num_bins, height, width, normalize=self.config.voxel_normalize)
            for a, b in zip(bounds[:-1], bounds[1:])
        ]
        return torch.stack([torch.as_tensor(g) for g in grids])

    @torch.no_grad()
    def encode_window(self, x, y, t, p, height: int, width: int) -> ReconstructionAlignmentOutput:
        """Features of one window, continuing the sequence's recurrent state (call :meth:`reset` between
        sequences). ``x, y, t (µs), p (0/1)`` as numpy arrays or tensors; sensor ``height``/``width``."""
        device = next(self.reconstructor.parameters()).device
        steps = self.event_steps(x, y, t, p, height, width).to(device)
        out = self(steps.unsqueeze(0), prev_states=self._stream_states)
        self._stream_states = out.states
        return out

    def encode_stream(self, windows: Iterable[Any], height: int | None = None, width: int | None = None, *,
                      token_level: bool = False, progress: bool = True) -> torch.Tensor:
        """Features of consecutive windows of ONE sequence: ``[N, D]`` pooled (or ``[N, T, D]`` tokens).

        Resets the state first and carries it across the windows.
        """
        return encode_windows(self, windows, height=height, width=width, token_level=token_level,
                              progress=progress, reset_key=None)

    @classmethod
    def from_reconstruction_checkpoint(cls, path: str | os.PathLike, **config_kwargs) -> ReconstructionAlignmentModel:
        """Build the strategy around a reconstruction net: an original ``.pth``/``.pth.tar`` file (converted
        on the fly) or a directory written by ``save_pretrained`` / the converter CLI. ``config_kwargs``
        go to :class:`ReconstructionAlignmentConfig` (e.g. ``clip_model_id``)."""
        from .checkpoint import load_original_checkpoint

        path = os.fspath(path)
        if os.path.isdir(path):
            from transformers import AutoConfig

            sub = AutoConfig.from_pretrained(path)
            if sub.model_type not in RECONSTRUCTION_MODELS:
                raise ValueError(f"{path}: model_type {sub.model_type!r} is not a reconstruction net "
                                 f"(expected one of {sorted(RECONSTRUCTION_MODELS)})")
            net = RECONSTRUCTION_MODELS[sub.model_type].from_pretrained(path)
        else:
            net = load_original_checkpoint(path)
        model = cls(ReconstructionAlignmentConfig(reconstruction_config=net.config.to_dict(), **config_kwargs))
        model.reconstructor.load_state_dict(net.state_dict(), strict=True)
        return model.eval()


def encode_windows(
    model: ReconstructionAlignmentModel,
    windows: Iterable[Any],
    *,
    height: int | None = None,
    width: int | None = None,
    token_level: bool = False,
    reset_key: str | None = "sequence",
    progress: bool = True,
) -> torch.Tensor:
    """Zero-paired-data baseline features for the pipeline: ``[N, D]`` (``[N, T, D]`` with ``token_level``).

    ``windows``: consecutive event windows (mappings or objects with ``x, y, t`` in µs, ``p`` in {0, 1};
    or ``(x, y, t, p)`` tuples) on a ``height x width`` sensor, e.g. the DSEC reader's ``EventWindow``s
    (which carry ``height``/``width``: then the arguments may be left out). The recurrent
    state starts fresh and is carried from window to window; when ``reset_key`` is given and a window
    carries that field (e.g. ``"sequence"``), the state resets whenever its value changes. Windows must
    be in temporal order within a sequence. Runs without gradients on the model's device.
    """
    from ..utils.progress import progress_bar

    model.reset()
    was_training = model.training
    model.eval()
    feats, current = [], object()
    try:
        for window in progress_bar(windows, desc="reconstruction features", disable=not progress):
            if reset_key is not None and not isinstance(window, (tuple, list)):
                key = window.get(reset_key) if hasattr(window, "get") else getattr(window, reset_key, None)
                if key is not None and key != current:
                    model.reset()
                    current = key
            h = height if height is not None else getattr(window, "height", None)
            w = width if width is not None else getattr(window, "width", None)
            if h is None or w is None:
                raise ValueError("encode_windows: pass height and width (the windows do not carry a sensor size)")
            out = model.encode_window(*_window_events(window), height=h, width=w)
            feats.append((out.token_features if token_level else out.aligned_features).cpu())
    finally:
        model.train(was_training)
        model.reset()
    if not feats:
        raise ValueError("encode_windows: the window iterable was empty")
    return torch.cat(feats)

# the product brief's name (transformers style is *Model)
ReconstructionAlignmentModule = ReconstructionAlignmentModel
