"""Building blocks of E2VID and FireNet, written from the published architecture description.

Attribute names (``conv2d``, ``norm_layer``, ``transposed_conv2d``, ``conv1``/``bn1``, ``Gates``,
``reset_gate``/``update_gate``/``out_gate``, ``recurrent_block``) are the ones the original
checkpoints use, so converting a checkpoint is a prefix rename, not a guess.

Recurrent state convention (one tensor type whatever the cell): a layer's state is a tensor of
shape ``[B, S, C, h, w]`` with ``S = 1`` for a ConvGRU (hidden) and ``S = 2`` for a ConvLSTM
(hidden, cell).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("none", "BN", "IN")
RECURRENT_BLOCKS = ("convlstm", "convgru")


def make_norm(norm: str, channels: int, bn_momentum: float) -> nn.Module | None:
    """BatchNorm / InstanceNorm (with running stats, as the original nets use) / nothing."""
    if norm == "BN":
        return nn.BatchNorm2d(channels, momentum=bn_momentum)
    if norm == "IN":
        return nn.InstanceNorm2d(channels, track_running_stats=True)
    return None


class ConvLayer(nn.Module):
    """conv2d -> optional norm -> optional ReLU. No conv bias under BatchNorm (it would be redundant)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, *, relu=True,
                 norm="none", bn_momentum=0.1):
        super().__init__()
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=norm != "BN")
        self.norm_layer = make_norm(norm, out_channels, bn_momentum)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2d(x)
        if self.norm_layer is not None:
            x = self.norm_layer(x)
        return F.relu(x) if self.relu else x


class TransposedConvLayer(nn.Module):
    """x2 upsampling by a transposed conv (stride 2, padding k//2, output_padding 1) -> norm -> ReLU."""

    def __init__(self, in_channels, out_channels, kernel_size, *, norm="none", bn_momentum=0.1):
        super().__init__()
        self.transposed_conv2d = nn.ConvTranspose2d(
            in_channels, out_channels, kernel_size, stride=2, padding=kernel_size // 2, output_padding=1,
            bias=norm != "BN",
        )
        self.norm_layer = make_norm(norm, out_channels, bn_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transposed_conv2d(x)
        if self.norm_layer is not None:
            x = self.norm_layer(x)
        return F.relu(x)


class UpsampleConvLayer(nn.Module):
    """x2 bilinear upsampling followed by a stride-1 conv -> norm -> ReLU (avoids checkerboard artefacts)."""

    def __init__(self, in_channels, out_channels, kernel_size, *, norm="none", bn_momentum=0.1):
        super().__init__()
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, 1, kernel_size // 2, bias=norm != "BN")
        self.norm_layer = make_norm(norm, out_channels, bn_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = self.conv2d(x)
        if self.norm_layer is not None:
            x = self.norm_layer(x)
        return F.relu(x)


class ResidualBlock(nn.Module):
    """relu(x + norm(conv3x3(relu(norm(conv3x3(x))))))."""

    def __init__(self, channels: int, *, norm="none", bn_momentum=0.1):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, bias=norm != "BN")
        self.bn1 = make_norm(norm, channels, bn_momentum)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=norm != "BN")
        self.bn2 = make_norm(norm, channels, bn_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        if self.bn1 is not None:
            out = self.bn1(out)
        out = self.conv2(F.relu(out))
        if self.bn2 is not None:
            out = self.bn2(out)
        return F.relu(out + x)


class ConvGRU(nn.Module):
    """Convolutional GRU: u, r = sigmoid(conv([x, h])); o = tanh(conv([x, h*r])); h' = h(1-u) + o*u.

    ``state``: ``[B, 1, hidden, h, w]`` or None (zeros). Returns ``(h', state')``.
    """

    state_slots = 1

    def __init__(self, input_size: int, hidden_size: int, kernel_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        pad = kernel_size // 2
        self.reset_gate = nn.Conv2d(input_size + hidden_size, hidden_size, kernel_size, padding=pad)
        self.update_gate = nn.Conv2d(input_size + hidden_size, hidden_size, kernel_size, padding=pad)
        self.out_gate = nn.Conv2d(input_size + hidden_size, hidden_size, kernel_size, padding=pad)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None):
        h = x.new_zeros(x.shape[0], self.hidden_size, *x.shape[2:]) if state is None else state[:, 0]
        stacked = torch.cat([x, h], dim=1)
        update = torch.sigmoid(self.update_gate(stacked))
        reset = torch.sigmoid(self.reset_gate(stacked))
        out = torch.tanh(self.out_gate(torch.cat([x, h * reset], dim=1)))
        h_new = h * (1 - update) + out * update
        return h_new, h_new.unsqueeze(1)


class ConvLSTM(nn.Module):
    """Convolutional LSTM with one conv (``Gates``) producing input, forget, output and cell gates in that order.

    ``state``: ``[B, 2, hidden, h, w]`` (hidden, cell) or None (zeros). Returns ``(hidden', state')``.
    """

    state_slots = 2

    def __init__(self, input_size: int, hidden_size: int, kernel_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.Gates = nn.Conv2d(input_size + hidden_size, 4 * hidden_size, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None):
        if state is None:
            h = c = x.new_zeros(x.shape[0], self.hidden_size, *x.shape[2:])
        else:
            h, c = state[:, 0], state[:, 1]
        i, f, o, g = self.Gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        return h_new, torch.stack([h_new, c_new], dim=1)


def make_recurrent(kind: str, input_size: int, hidden_size: int, kernel_size: int) -> nn.Module:
    if kind == "convlstm":
        return ConvLSTM(input_size, hidden_size, kernel_size)
    if kind == "convgru":
        return ConvGRU(input_size, hidden_size, kernel_size)
    raise ValueError(f"recurrent_block_type={kind!r} is invalid: expected one of {RECURRENT_BLOCKS}")


class RecurrentConvLayer(nn.Module):
    """``conv`` (a ConvLayer, or a ResidualBlock for FireNet's recurrent residual layer) then ``recurrent_block``."""

    def __init__(self, conv: nn.Module, recurrent_block: nn.Module):
        super().__init__()
        self.conv = conv
        self.recurrent_block = recurrent_block

    def forward(self, x: torch.Tensor, state: torch.Tensor | None):
        return self.recurrent_block(self.conv(x), state)


def check_states(states, expected: int, batch: int, name: str, sizes=None) -> None:
    """Validate ``prev_states`` (a sequence of ``expected`` tensors ``[B, S, C, h, w]``, with ``(h, w)`` equal
    to ``sizes[i]`` when given) with a clear message."""
    if not isinstance(states, (list, tuple)) or len(states) != expected:
        got = f"{type(states).__name__} of length {len(states)}" if isinstance(states, (list, tuple)) else type(states).__name__
        raise ValueError(f"{name}.prev_states must be a tuple of {expected} state tensors (one per recurrent layer), got {got}")
    for i, s in enumerate(states):
        if not isinstance(s, torch.Tensor) or s.dim() != 5 or s.shape[0] != batch:
            shape = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
            raise ValueError(
                f"{name}.prev_states[{i}] has shape {shape}: expected [B={batch}, S, C, h, w]; "
                "states from a different batch size or frame size cannot be reused (call with prev_states=None to reset)"
            )
        if sizes is not None and tuple(s.shape[-2:]) != tuple(sizes[i]):
            raise ValueError(
                f"{name}.prev_states[{i}] is {tuple(s.shape[-2:])} spatially: expected {tuple(sizes[i])} for this "
                "input size; states cannot be carried across frame sizes (call with prev_states=None to reset)"
            )
