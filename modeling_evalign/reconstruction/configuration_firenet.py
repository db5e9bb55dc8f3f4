"""Configuration of FireNet, the small recurrent reconstruction network (37,777 parameters at the defaults)."""

from __future__ import annotations

from ..configuration_utils import EvalignConfig


class FireNetConfig(EvalignConfig):
    """FireNet hyper-parameters: conv(num_bins->C, k)+ReLU -> ConvGRU -> ResidualBlock -> ConvGRU ->
    ResidualBlock -> conv 1x1 (no activation by default).

    num_bins: temporal bins of the input voxel grid.
    base_num_channels: C, the width of every layer.
    kernel_size: kernel of the head conv and the recurrent convs.
    recurrent_block_type: "convgru" (published) or "convlstm".
    final_activation: "none" (published) or "sigmoid".
    """

    model_type = "evalign_firenet"

    num_bins: int = 5
    base_num_channels: int = 16
    kernel_size: int = 3
    recurrent_block_type: str = "convgru"
    final_activation: str = "none"

    def __post_init__(self, **kwargs):
        for name in ("num_bins", "base_num_channels", "kernel_size"):
            value = getattr(self, name)
            self._check(isinstance(value, int) and value >= 1, name, "an integer >= 1")
        self._check(self.kernel_size % 2 == 1, "kernel_size", "an odd integer")
        self._check(self.recurrent_block_type in ("convlstm", "convgru"), "recurrent_block_type",
                    "'convlstm' or 'convgru'")
        self._check(self.final_activation in ("sigmoid", "none"), "final_activation", "'sigmoid' or 'none'")
        super().__post_init__(**kwargs)
