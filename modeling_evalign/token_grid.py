"""Resample ViT token sequences between patch grids (e.g. CLIP-336's 1+24x24 -> CLIP-224's 1+16x16).

Grid sizes are always passed in: nothing here knows a sensor or a ViT resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

RESAMPLE_MODES = ("bilinear", "bicubic", "area", "nearest")


def resample_token_grid(
    tokens: torch.Tensor,
    source_grid: tuple[int, int] | list[int],
    target_grid: tuple[int, int] | list[int],
    *,
    has_cls: bool = True,
    keep_cls: bool = True,
    mode: str = "bilinear",
) -> torch.Tensor:
    """Interpolate the patch grid of ``tokens`` to ``target_grid``.

    Args:
        tokens: ``[B, N, D]`` with ``N = has_cls + Hs * Ws`` (row-major patches, CLS first if present).
        source_grid, target_grid: ``(height, width)`` in patches.
        has_cls: whether token 0 is a CLS token (it is never interpolated).
        keep_cls: keep the CLS token in front of the result (only meaningful when ``has_cls``).
        mode: ``torch.nn.functional.interpolate`` mode, one of ``RESAMPLE_MODES``
            (``align_corners=False``; "area" averages, the usual choice for downsampling).

    Returns:
        ``[B, (has_cls and keep_cls) + Ht * Wt, D]``, same dtype and device.
    """
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 3:
        shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise ValueError(f"tokens has shape {shape}: expected [B, N, D]")
    if mode not in RESAMPLE_MODES:
        raise ValueError(f"resample mode {mode!r} is unknown: expected one of {RESAMPLE_MODES}")
    hs, ws = (int(v) for v in source_grid)
    ht, wt = (int(v) for v in target_grid)
    if min(hs, ws, ht, wt) <= 0:
        raise ValueError(f"grids must be positive (height, width): got source {source_grid}, target {target_grid}")
    b, n, d = tokens.shape
    expected = hs * ws + int(has_cls)
    if n != expected:
        raise ValueError(
            f"tokens has {n} tokens: expected {expected} = {int(has_cls)} CLS + {hs}x{ws} patches"
        )
    patches = tokens[:, int(has_cls):]
    if (hs, ws) != (ht, wt):
        # [B, H, W, D] permuted to [B, D, H, W] is channels-last in memory: interpolate keeps that
        # layout, so the permute back to [B, H, W, D] below is free of copies.
        grid = patches.reshape(b, hs, ws, d).permute(0, 3, 1, 2)
        kwargs = {} if mode in ("area", "nearest") else {"align_corners": False}
        grid = F.interpolate(grid, size=(ht, wt), mode=mode, **kwargs)
        patches = grid.permute(0, 2, 3, 1).reshape(b, ht * wt, d)
    if has_cls and keep_cls:
        return torch.cat([tokens[:, :1], patches], dim=1)
    return patches.contiguous()
