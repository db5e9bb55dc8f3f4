"""Configuration of E2VID, the recurrent U-Net that reconstructs intensity frames from event voxel grids."""

from __future__ import annotations

from ..configuration_utils import EvalignConfig


class E2VIDConfig(EvalignConfig):
    """E2VID hyper-parameters (defaults = the published E2VID_lightweight, 10,712,098 parameters).

    num_bins: temporal bins of the input voxel grid (input channels).
    num_encoders: encoder/decoder levels; the input is zero-padded to a multiple of ``2**num_encoders``.
    base_num_channels: channels after the head conv; level i has ``base * 2**(i+1)``.
    num_residual_blocks: residual blocks at the bottleneck.
    norm: "none", "BN" (BatchNorm) or "IN" (InstanceNorm with running statistics).
    skip_type: "sum" or "concat" skip connections.
    use_upsample_conv: bilinear upsample + conv k5 in the decoders (True) or transposed conv k5 s2 (False).
    recurrent_block_type: "convlstm" or "convgru" after every encoder conv.
    kernel_size: kernel of the encoder/decoder convs (the head conv is always 5, recurrent convs 3).
    final_activation: "sigmoid" (published nets) or "none".
    bn_momentum: BatchNorm momentum (only matters when training).
    """

    model_type = "evalign_e2vid"

    num_bins: int = 5
    num_encoders: int = 3
    base_num_channels: int = 32
    num_residual_blocks: int = 2
    norm: str = "BN"
    skip_type: str = "sum"
    use_upsample_conv: bool = False
    recurrent_block_type: str = "convlstm"
    kernel_size: int = 5
    final_activation: str = "sigmoid"
    bn_momentum: float = 0.1

    def __post_init__(self, **kwargs):
        for name in ("num_bins", "num_encoders", "base_num_channels", "kernel_size"):
            value = getattr(self, name)
            self._check(isinstance(value, int) and value >= 1, name, "an integer >= 1")
        self._check(isinstance(self.num_residual_blocks, int) and self.num_residual_blocks >= 0,
                    "num_residual_blocks", "an integer >= 0")
        self._check(self.kernel_size % 2 == 1, "kernel_size", "an odd integer")
        self._check(self.norm in ("none", "BN", "IN"), "norm", "one of 'none', 'BN', 'IN'")
        self._check(self.skip_type in ("sum", "concat"), "skip_type", "'sum' or 'concat'")
        self._check(self.recurrent_block_type in ("convlstm", "convgru"), "recurrent_block_type",
                    "'convlstm' or 'convgru'")
        self._check(self.final_activation in ("sigmoid", "none"), "final_activation", "'sigmoid' or 'none'")
        super().__post_init__(**kwargs)

    @classmethod
    def lightweight(cls, **overrides) -> E2VIDConfig:
        """The published E2VID_lightweight preset (the defaults), optionally overridden."""
        return cls(**overrides)
