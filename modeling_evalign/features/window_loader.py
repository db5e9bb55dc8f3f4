"""Rows -> CLIP pixel batches in DataLoader workers: decoding, event rendering and resizing off the main process.

A batch is ``batch_size`` windows: ``event_pixels [B, F, 3, S, S]`` (all ``B * F`` frames go through the
event tower in one forward pass), ``target_pixels [B, 3, S', S']`` and the rows' metadata fields. Batches
never straddle a shard (``batch_sampler`` lists each shard's batches), so a window is always encoded with
the same neighbours, whichever process or run encodes its shard: results are bit-identical.

Workers: the rows (a ``datasets.Dataset``, a list, or :class:`~.dsec_windows.DsecWindows`) are pickled or
forked into each worker; readers of HDF5 recordings open their files there, on first use.
:func:`worker_init` imports ``hdf5plugin`` (the Blosc filter DSEC needs) in every worker.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .clip_preprocessing import clip_preprocess

METADATA_FIELDS = (
    "sequence",
    "window_index",
    "window_start_us",
    "window_end_us",
    "event_count",
    "rgb_timestamp_us",
    "scene",
    "label",
)


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


class PreparedWindows(torch.utils.data.Dataset):
    """``examples[i]`` -> ``(event_pixels [F, 3, S, S], target_pixels [3, S', S'], metadata dict)``."""

    def __init__(self, examples, options, event_size: int, target_size: int):
        self.examples, self.options = examples, options
        self.event_size, self.target_size = int(event_size), int(target_size)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int):
        o = self.options
        row = self.examples[i]
        for key in (o.event_key, o.image_key):
            if key not in row:
                raise KeyError(f"examples: field {key!r} missing; have {sorted(row)}")
        frames = row[o.event_key]
        event = clip_preprocess(frames, self.event_size, o.image_mean, o.image_std)
        target = clip_preprocess([row[o.image_key]], self.target_size, o.image_mean, o.image_std)[0]
        return event, target, {k: _plain(row.get(k)) for k in METADATA_FIELDS}


def collate_windows(items: Sequence, event_key: str = "eventgpt_frames"):
    counts = sorted({int(ev.shape[0]) for ev, _, _ in items})
    if len(counts) != 1:
        raise ValueError(f"{event_key}: every window needs the same number of frames, got {counts}")
    if counts[0] == 0:
        raise ValueError(f"{event_key}: a window has no event frames")
    event = torch.stack([ev for ev, _, _ in items])
    target = torch.stack([tg for _, tg, _ in items])
    return event, target, [meta for _, _, meta in items]


class _Collate:
    """Picklable collate bound to the event field name (for its error message)."""

    def __init__(self, event_key: str):
        self.event_key = event_key

    def __call__(self, items):
        return collate_windows(items, self.event_key)


def worker_init(_worker_id: int) -> None:
    import hdf5plugin  # noqa: F401  (registers DSEC's Blosc filter in this worker process)

    torch.set_num_threads(1)  # workers decode and resize; the main process runs the encoders


def window_batches(
    dataset: PreparedWindows, batches: list[list[int]], num_workers: int, pin_memory: bool = False
):
    """Iterator over the collated ``batches`` (lists of row indices), in order."""
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
    if num_workers == 0:  # same code path, no processes: plain iteration
        collate = _Collate(dataset.options.event_key)
        return (collate([dataset[i] for i in batch]) for batch in batches)
    return iter(
        torch.utils.data.DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=num_workers,
            collate_fn=_Collate(dataset.options.event_key),
            worker_init_fn=worker_init,
            pin_memory=pin_memory,
            prefetch_factor=2,
        )
    )
