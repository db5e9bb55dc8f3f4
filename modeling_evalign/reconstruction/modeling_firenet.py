"""FireNet: a 37,777-parameter recurrent network reconstructing intensity from event voxel grids.

Re-implemented from the published description (Scheerlinck et al., "Fast Image Reconstruction with an
Event Camera", WACV 2020). Module names follow one of the published checkpoint layouts (``net.head.conv``,
``net.head.recurrent_block``, ``net.resblocks.0.conv`` / ``.recurrent_block``, ``net.resblocks.1``,
``net.pred`` without the ``net.`` prefix); the other layout (head, G1, R1, G2, R2, pred) is renamed by
:mod:`modeling_evalign.reconstruction.checkpoint`.
"""

from __future__ import annotations

import torch
from torch import nn

from .configuration_firenet import FireNetConfig
from .layers import ConvLayer, RecurrentConvLayer, ResidualBlock, check_states, make_recurrent
from .outputs import ReconstructionOutput
from .recurrent_base import RecurrentReconstructionPreTrainedModel


class FireNetModel(RecurrentReconstructionPreTrainedModel):
    """conv(num_bins->C, k)+ReLU -> ConvGRU -> ResidualBlock -> ConvGRU -> ResidualBlock -> conv 1x1.

    ``forward(voxel [B, num_bins, H, W], prev_states=None) -> ReconstructionOutput``: ``image [B, 1, H, W]``
    (no final activation: unbounded, roughly [0, 1] on normalised input) and ``states`` (2 tensors
    ``[B, S, C, H, W]``). Fully convolutional at stride 1: no padding needed.
    """

    config_class = FireNetConfig

    def __init__(self, config: FireNetConfig):
        super().__init__(config)
        c, k, kind = config.base_num_channels, config.kernel_size, config.recurrent_block_type
        self.head = RecurrentConvLayer(ConvLayer(config.num_bins, c, k, 1, k // 2), make_recurrent(kind, c, c, k))
        self.resblocks = nn.ModuleList(
            [RecurrentConvLayer(ResidualBlock(c), make_recurrent(kind, c, c, k)), ResidualBlock(c)]
        )
        self.pred = ConvLayer(c, 1, 1, relu=False)
        self.post_init()

    def forward(self, voxel: torch.Tensor, prev_states=None) -> ReconstructionOutput:
        self._check_voxel(voxel)
        if prev_states is None:
            prev_states = (None, None)
        else:
            check_states(prev_states, 2, voxel.shape[0], type(self).__name__, [voxel.shape[-2:]] * 2)
        x, s0 = self.head(voxel, prev_states[0])
        x, s1 = self.resblocks[0](x, prev_states[1])
        x = self.resblocks[1](x)
        image = self.pred(x)
        if self.config.final_activation == "sigmoid":
            image = torch.sigmoid(image)
        return ReconstructionOutput(image=image, states=(s0, s1))
