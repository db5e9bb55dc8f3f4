"""Output dataclass of the reconstruction networks (E2VID, FireNet)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class ReconstructionOutput(ModelOutput):
    """Result of one recurrent reconstruction step.

    image: ``[B, 1, H, W]`` float intensity at the input's size (padding cropped back). E2VID ends with a
        sigmoid (values in [0, 1]); FireNet has no final activation (arbitrary range: rescale robustly).
    states: one tensor per recurrent layer, ``[B, S, C, h, w]`` (S = 1 for ConvGRU, 2 for ConvLSTM
        hidden + cell) at the padded size; pass back as ``prev_states`` for the next window of the
        same sequence, or None to start a new sequence.
    """

    image: torch.Tensor | None = None
    states: tuple[torch.Tensor, ...] | None = None


@dataclass
class ReconstructionAlignmentOutput(ModelOutput):
    """Result of the reconstruction-bridging strategy for a batch of windows.

    aligned_features: ``[B, D]`` CLIP ``pooler_output`` (D = ``config.target_dim``), in the target space.
    token_features: ``[B, T, D]`` CLIP hidden states of ``config.feature_layer`` (T = patches + 1, CLS first).
    images: ``[B, 1, H, W]`` reconstructed intensity after the robust rescale, in [0, 1].
    pixel_values: ``[B, 3, S, S]`` the CLIP input (S = the tower's image size).
    states: the reconstruction net's recurrent states after the last step (see ``ReconstructionOutput``).
    loss, mse_loss, cosine_loss: scalars, only when ``target_features`` were given (evaluation: nothing is
        trained): ``loss = mse_loss`` = MSE to the targets, ``cosine_loss`` = mean(1 - cos), over rows/tokens.
    """

    loss: torch.Tensor | None = None
    mse_loss: torch.Tensor | None = None
    cosine_loss: torch.Tensor | None = None
    aligned_features: torch.Tensor | None = None
    token_features: torch.Tensor | None = None
    images: torch.Tensor | None = None
    pixel_values: torch.Tensor | None = None
    states: tuple[torch.Tensor, ...] | None = None
