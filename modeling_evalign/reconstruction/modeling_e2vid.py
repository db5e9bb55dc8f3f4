"""E2VID: recurrent U-Net (ConvLSTM after every encoder) reconstructing intensity from event voxel grids.

Re-implemented from the published description (Rebecq et al., "High Speed and High Dynamic Range Video
with an Event Camera", TPAMI 2019); module names match the original checkpoints (minus their
``unetrecurrent.`` prefix) so :func:`modeling_evalign.reconstruction.checkpoint.load_original_checkpoint`
is a rename.
"""

from __future__ import annotations

import torch
from torch import nn

from .configuration_e2vid import E2VIDConfig
from .layers import (
    ConvLayer,
    RecurrentConvLayer,
    ResidualBlock,
    TransposedConvLayer,
    UpsampleConvLayer,
    check_states,
    make_recurrent,
)
from .outputs import ReconstructionOutput
from .recurrent_base import RecurrentReconstructionPreTrainedModel


class E2VIDModel(RecurrentReconstructionPreTrainedModel):
    """head conv k5 -> num_encoders x (conv k s2 + ConvLSTM k3) -> residual blocks -> decoders with skips
    -> 1x1 prediction conv -> sigmoid.

    ``forward(voxel [B, num_bins, H, W], prev_states=None) -> ReconstructionOutput`` with ``image
    [B, 1, H, W]`` in [0, 1] and ``states`` (num_encoders tensors ``[B, S, C_i, h_i, w_i]`` at the padded
    size). Any H, W: the input is zero-padded to a multiple of ``2**num_encoders`` and cropped back.
    """

    config_class = E2VIDConfig

    def __init__(self, config: E2VIDConfig):
        super().__init__(config)
        self.size_multiple = 2**config.num_encoders
        norm, mom, k, base = config.norm, config.bn_momentum, config.kernel_size, config.base_num_channels
        skip_factor = 1 if config.skip_type == "sum" else 2
        self.head = ConvLayer(config.num_bins, base, 5, 1, 2)
        self.encoders = nn.ModuleList()
        for i in range(config.num_encoders):
            cin, cout = base * 2**i, base * 2 ** (i + 1)
            conv = ConvLayer(cin, cout, k, 2, k // 2, norm=norm, bn_momentum=mom)
            self.encoders.append(RecurrentConvLayer(conv, make_recurrent(config.recurrent_block_type, cout, cout, 3)))
        width = base * 2**config.num_encoders
        self.resblocks = nn.ModuleList(
            ResidualBlock(width, norm=norm, bn_momentum=mom) for _ in range(config.num_residual_blocks)
        )
        up = UpsampleConvLayer if config.use_upsample_conv else TransposedConvLayer
        self.decoders = nn.ModuleList(
            up(skip_factor * base * 2**i, base * 2 ** (i - 1), k, norm=norm, bn_momentum=mom)
            for i in range(config.num_encoders, 0, -1)
        )
        self.pred = ConvLayer(skip_factor * base, 1, 1, relu=False, norm=norm, bn_momentum=mom)
        self.post_init()

    def _skip(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return x + skip if self.config.skip_type == "sum" else torch.cat([x, skip], dim=1)

    def forward(self, voxel: torch.Tensor, prev_states=None) -> ReconstructionOutput:
        self._check_voxel(voxel)
        n = self.config.num_encoders
        x, pad = self._pad(voxel)
        if prev_states is None:
            prev_states = (None,) * n
        else:
            hp, wp = x.shape[-2:]
            sizes = [(hp >> (i + 1), wp >> (i + 1)) for i in range(n)]
            check_states(prev_states, n, voxel.shape[0], type(self).__name__, sizes)
        x = self.head(x)
        head = x
        blocks, states = [], []
        for encoder, prev in zip(self.encoders, prev_states):
            x, state = encoder(x, prev)
            blocks.append(x)
            states.append(state)
        for block in self.resblocks:
            x = block(x)
        for i, decoder in enumerate(self.decoders):
            x = decoder(self._skip(x, blocks[n - 1 - i]))
        image = self.pred(self._skip(x, head))
        if self.config.final_activation == "sigmoid":
            image = torch.sigmoid(image)
        return ReconstructionOutput(image=self._crop(image, pad), states=tuple(states))
