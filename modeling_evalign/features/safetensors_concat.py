"""Concatenate one tensor from many safetensors files along dim 0, streaming (one source in memory at once).

The safetensors layout is an 8-byte little-endian header length, a JSON header (dtype, shape, byte offsets
per tensor; padded with spaces to a multiple of 8) and the raw little-endian tensor bytes. Writing it by hand
lets a [N, T, D] feature file larger than memory be assembled shard by shard.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence

import torch

from ..utils.io_utils import atomic_open

_TAGS = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def concat_safetensors(
    sources: Sequence[str | os.PathLike], key: str, dest: str | os.PathLike, out_key: str = "features"
) -> list[int]:
    """Write ``cat([file[key] for file in sources], 0)`` to ``dest`` under ``out_key``, atomically.

    Returns the output shape. Raises ValueError naming the file whose dtype or trailing shape differs.
    """
    from safetensors import safe_open

    if not sources:
        raise ValueError("concat_safetensors: no source files")
    shapes, dtype = [], None
    for src in sources:
        with safe_open(str(src), framework="pt") as f:
            names = list(f.keys())  # a safe_open handle has no __contains__
            if key not in names:
                raise KeyError(f"{src}: no tensor {key!r}; has {sorted(names)}")
            sl = f.get_slice(key)
            shape, tag = list(sl.get_shape()), sl.get_dtype()
        if dtype is None:
            dtype, first = tag, (str(src), shape)
        if tag != dtype or shape[1:] != first[1][1:] or not shape:
            raise ValueError(
                f"{src}: {key!r} is {tag} {shape}, expected {dtype} [*, {first[1][1:]}] as in {first[0]}"
            )
        shapes.append(shape)
    total = [sum(s[0] for s in shapes), *shapes[0][1:]]
    if dtype not in _TAGS.values():
        raise ValueError(
            f"{sources[0]}: dtype {dtype} not supported (expected one of {sorted(_TAGS.values())})"
        )
    itemsize = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}[dtype]
    nbytes = itemsize * int(torch.tensor(total).prod().item()) if total else 0
    header = json.dumps(
        {out_key: {"dtype": dtype, "shape": total, "data_offsets": [0, nbytes]}}, separators=(",", ":")
    )
    header_bytes = header.encode() + b" " * (-len(header.encode()) % 8)

    with atomic_open(dest) as out:
        out.write(struct.pack("<Q", len(header_bytes)))
        out.write(header_bytes)
        for src in sources:
            with safe_open(str(src), framework="pt") as f:
                tensor = f.get_tensor(key).contiguous()
            out.write(tensor.view(torch.uint8).numpy().tobytes())
    return total
