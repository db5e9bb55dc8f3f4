"""Shared base of the recurrent reconstruction networks: weight init, input checks, padding."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from ..modeling_utils import EvalignPreTrainedModel


class RecurrentReconstructionPreTrainedModel(EvalignPreTrainedModel):
    """Base of E2VIDModel and FireNetModel: ``forward(voxel [B, num_bins, H, W], prev_states=None)``."""

    main_input_name = "voxel"
    # input sides are padded to a multiple of this (2**num_encoders for a U-Net)
    size_multiple = 1

    def _init_weights(self, module: nn.Module) -> None:
        # PyTorch's default conv init (kaiming uniform, a=sqrt(5)), as the original nets were trained from.
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                fan_in = module.weight[0].numel() if isinstance(module, nn.Conv2d) else module.weight[:, 0].numel()
                bound = 1 / math.sqrt(fan_in)
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, (nn.BatchNorm2d, nn.InstanceNorm2d)):
            if module.weight is not None:
                init.ones_(module.weight)
                init.zeros_(module.bias)
            if module.running_mean is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)

    def _check_voxel(self, voxel: torch.Tensor) -> None:
        if not isinstance(voxel, torch.Tensor):
            raise TypeError(f"{type(self).__name__}: voxel must be a torch.Tensor, got {type(voxel).__name__}")
        if voxel.dim() != 4 or voxel.shape[1] != self.config.num_bins:
            raise ValueError(
                f"{type(self).__name__}: voxel has shape {tuple(voxel.shape)}: expected [B, num_bins="
                f"{self.config.num_bins}, H, W]"
            )
        if not voxel.is_floating_point():
            raise TypeError(f"{type(self).__name__}: voxel must be a floating tensor, got {voxel.dtype}")

    def _pad(self, voxel: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
        """Zero-pad H and W up to a multiple of ``size_multiple``, split evenly; returns the pad (l, r, t, b)."""
        m = self.size_multiple
        h, w = voxel.shape[-2:]
        ph, pw = (-h) % m, (-w) % m
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        return (F.pad(voxel, pad) if ph or pw else voxel), pad

    @staticmethod
    def _crop(image: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
        left, right, top, bottom = pad
        h, w = image.shape[-2:]
        return image[..., top : h - bottom, left : w - right]
