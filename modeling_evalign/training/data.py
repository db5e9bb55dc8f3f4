"""Training data for the Accelerate loop: feature directories, DSEC image pairs, and the sharded batch order.

Every dataset item is a dict of tensors named after the model's forward arguments
(the strategy spec's ``inputs``); extra keys (e.g. ``index``) are ignored by the loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from ..registry import FEATURE_INPUTS, get_strategy
from .config import TrainConfig


def model_inputs(strategy: str) -> tuple[str, str]:
    """(event input, target input) names of the strategy model's forward."""
    return get_strategy(strategy).inputs


@dataclass
class TrainData:
    """Train/validation datasets of one run plus what training_info.json reports about them."""

    train: Dataset
    val: Dataset | None
    source: dict[str, Any] = field(default_factory=dict)
    event_dim: int | None = None
    target_dim: int | None = None
    class_names: list[str] | None = None


class PairDataset(Dataset):
    """In-memory pairs ``{event_name: event[i], target_name: target[i], "index": i}`` (equal first dims)."""

    def __init__(self, event: torch.Tensor, target: torch.Tensor, names: Sequence[str] = FEATURE_INPUTS):
        if event.shape[0] != target.shape[0]:
            raise ValueError(f"PairDataset: {names[0]} has {event.shape[0]} rows but {names[1]} has {target.shape[0]}")
        self.event, self.target, self.names = event, target, tuple(names)

    def __len__(self) -> int:
        return self.event.shape[0]

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {self.names[0]: self.event[i], self.names[1]: self.target[i], "index": i}


class ImagePairDataset(Dataset):
    """Rows of a ``datasets.Dataset`` (event image + RGB image columns) as CLIP-preprocessed pixel tensors.

    Items: ``event_pixel_values`` and ``pixel_values`` ``[3, image_size, image_size]`` float32 (CLIP mean/std).
    """

    def __init__(self, hf_dataset, event_column: str, image_column: str, image_size: int):
        missing = [c for c in (event_column, image_column) if c not in hf_dataset.column_names]
        if missing:
            raise KeyError(f"dataset has no column(s) {missing}: columns are {hf_dataset.column_names}")
        self.ds, self.event_column, self.image_column, self.image_size = hf_dataset, event_column, image_column, image_size

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import numpy as np

        from ..features.clip_preprocessing import clip_preprocess

        row = self.ds[int(i)]
        event, image = row[self.event_column], row[self.image_column]
        if isinstance(event, (list, tuple)) and event and hasattr(event[0], "convert"):
            event = event[-1]  # EventGPT frames (PIL images): CEIA uses one image per window; take the last
        if not hasattr(event, "convert"):  # CEIA histogram: float [H, W, 3] in [0, 1]
            event = (np.clip(np.asarray(event, dtype=np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
        pixels = clip_preprocess([event, image], self.image_size)
        return {"event_pixel_values": pixels[0], "pixel_values": pixels[1], "index": int(i)}

    def metadata_column(self, key: str) -> list:
        """Values of the dataset column ``key`` (e.g. the builder's ``scene``), one per row, for labels."""
        if key not in self.ds.column_names:
            raise KeyError(f"dataset has no column {key!r} to read labels from: columns are {self.ds.column_names}")
        return list(self.ds[key])


def tail_split(dataset: Dataset, val_fraction: float) -> tuple[Dataset, Dataset]:
    """Last ``val_fraction`` of the rows as validation, the rest as training.

    A contiguous tail rather than a random split: consecutive DSEC windows overlap in content, so random
    rows would leak near-duplicates of training samples into validation.
    """
    n = len(dataset)
    n_val = max(1, round(n * val_fraction))
    if n - n_val < 1:
        raise ValueError(f"cannot split {n} samples with val_fraction={val_fraction}: nothing left to train on")
    return Subset(dataset, range(n - n_val)), Subset(dataset, range(n - n_val, n))


def load_feature_data(config: TrainConfig) -> TrainData:
    """Feature directories (``AlignmentDataset.from_directory``) for the feature-level strategies."""
    from ..data.alignment_dataset import AlignmentDataset

    train = AlignmentDataset.from_directory(config.train_dir)
    val = AlignmentDataset.from_directory(config.val_dir) if config.val_dir else None
    if val is not None and (val.event_dim, val.target_dim) != (train.event_dim, train.target_dim):
        raise ValueError(
            f"val_dir {config.val_dir} has dims (event {val.event_dim}, target {val.target_dim}) but train_dir "
            f"{config.train_dir} has (event {train.event_dim}, target {train.target_dim})"
        )
    event_dim, target_dim = train.event_dim, train.target_dim
    if val is None:
        train, val = tail_split(train, config.val_fraction)
    source = {"type": "features", "train_dir": config.train_dir, "val_dir": config.val_dir}
    return TrainData(train, val, source, event_dim, target_dim)


# DsecAlignmentBuilder columns used by the image-level strategy: CEIA's histogram image and the RGB frame.
DSEC_EVENT_COLUMN = "event_histogram"
DSEC_IMAGE_COLUMN = "rgb"


def load_dsec_image_data(config: TrainConfig, duration: str, image_size: int) -> TrainData:
    """DSEC builder splits (train / validation) of one duration as CLIP-preprocessed image pairs."""
    from ..data.dsec_builder import DsecAlignmentBuilder

    builder = DsecAlignmentBuilder(config_name=duration, data_dir=config.dsec_data_dir, cache_dir=config.dsec_cache_dir,
                                   representations=(DSEC_EVENT_COLUMN,))
    builder.download_and_prepare()
    splits = set(builder.info.splits or {})
    train_hf = builder.as_dataset(split="train")
    val_name = next((s for s in ("validation", "test") if s in splits), None)
    train = ImagePairDataset(train_hf, DSEC_EVENT_COLUMN, DSEC_IMAGE_COLUMN, image_size)
    if val_name is None:
        train, val = tail_split(train, config.val_fraction)
    else:
        val = ImagePairDataset(builder.as_dataset(split=val_name), DSEC_EVENT_COLUMN, DSEC_IMAGE_COLUMN, image_size)
    source = {"type": "dsec", "data_dir": config.dsec_data_dir, "duration": duration, "val_split": val_name or "tail"}
    return TrainData(train, val, source)


def load_dsec_feature_data(config: TrainConfig, duration: str) -> TrainData:
    """DSEC builder splits -> frozen-CLIP feature directories under ``output_dir/features/<split>`` -> datasets.

    Extraction (EventGPT-pooled event features, penultimate-layer CLS target features, see
    ``features.extraction``) runs once and resumes after a kill; later runs reuse the finished directories.
    """
    from ..data.alignment_dataset import AlignmentDataset
    from ..data.dsec_builder import DsecAlignmentBuilder
    from ..features.extraction import extract_features

    builder = DsecAlignmentBuilder(config_name=duration, data_dir=config.dsec_data_dir, cache_dir=config.dsec_cache_dir)
    builder.download_and_prepare()
    splits = set(builder.info.splits or {})
    val_name = next((s for s in ("validation", "test") if s in splits), None)
    root = Path(config.output_dir) / "features"
    encoder = _clip_vision_model(config.clip_model, config.clip_revision)
    for split in ("train", val_name) if val_name else ("train",):
        extract_features(builder.as_dataset(split=split), root / split, encoder, split=split)
    train = AlignmentDataset.from_directory(root / "train")
    val = AlignmentDataset.from_directory(root / val_name) if val_name else None
    event_dim, target_dim = train.event_dim, train.target_dim
    if val is None:
        train, val = tail_split(train, config.val_fraction)
    source = {"type": "dsec_features", "data_dir": config.dsec_data_dir, "duration": duration,
              "features_dir": str(root), "val_split": val_name or "tail", "clip_model": config.clip_model,
              "clip_revision": config.clip_revision}
    return TrainData(train, val, source, event_dim, target_dim)


def _clip_vision_model(name_or_path: str, revision: str):
    from ..features.towers import load_clip_vision_tower  # refuses anything but a complete CLIP vision tower

    return load_clip_vision_tower(name_or_path, revision=revision, what="--clip_model", frozen=False)


def load_data(config: TrainConfig, duration: str | None, image_size: int | None = None) -> TrainData:
    """The data of one run; ``config`` is already specialised to ``duration``."""
    if config.spec.data_kind == "features":
        if config.train_dir is None:
            return load_dsec_feature_data(config, duration)
        return load_feature_data(config)
    if config.dsec_data_dir is None:
        raise ValueError(f"strategy {config.strategy!r} trains on DSEC image pairs: give dsec_data_dir and durations")
    return load_dsec_image_data(config, duration, image_size)


class ShardedBatchSampler:
    """Global batches of a per-epoch seeded permutation; yields this process's slice of each.

    Global batch ``b`` of epoch ``e`` is ``randperm(n, seed + e)[b*G:(b+1)*G]`` whatever the number of
    processes, and process ``r`` of ``W`` takes rows ``[r*G/W, (r+1)*G/W)`` of it, so one process and
    several see the same global batches. The last incomplete batch is dropped (the contrastive loss needs
    equal batch sizes on every process). ``start_batch`` skips batches already done (resume).
    """

    def __init__(self, n: int, global_batch: int, rank: int, world: int, seed: int, epoch: int, start_batch: int = 0):
        if global_batch % world:
            raise ValueError(f"batch_size={global_batch} must be divisible by the number of processes ({world})")
        if global_batch > n:
            raise ValueError(f"batch_size={global_batch} is larger than the training data ({n} samples)")
        self.n, self.global_batch, self.rank, self.world = n, global_batch, rank, world
        self.seed, self.epoch, self.start_batch = seed, epoch, start_batch

    def __len__(self) -> int:
        return self.n // self.global_batch - self.start_batch

    def __iter__(self) -> Iterator[list[int]]:
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        local = self.global_batch // self.world
        for b in range(self.start_batch, self.n // self.global_batch):
            batch = perm[b * self.global_batch : (b + 1) * self.global_batch]
            yield batch[self.rank * local : (self.rank + 1) * local].tolist()


def shard_indices(n: int, rank: int, world: int) -> tuple[list[int], int]:
    """Contiguous shard of ``range(n)`` for validation, padded (repeating its last index) to equal length on
    every process; returns the indices and how many of them are real."""
    per = -(-n // world)
    real = list(range(rank * per, min(n, (rank + 1) * per)))
    pad = real[-1:] if real else [n - 1]
    return real + pad * (per - len(real)), len(real)


class LabelledDataset(Dataset):
    """``dataset``'s items plus ``"labels"``: the class index of each sample (triple-modal's text terms)."""

    def __init__(self, dataset: Dataset, labels: Sequence[int]):
        if len(labels) != len(dataset):
            raise ValueError(f"LabelledDataset: {len(labels)} labels for {len(dataset)} samples")
        self.dataset, self.labels = dataset, list(labels)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.dataset[i], "labels": torch.tensor(self.labels[i], dtype=torch.long)}


def _metadata_column(dataset: Dataset, key: str) -> list[Any]:
    if isinstance(dataset, Subset):
        column = _metadata_column(dataset.dataset, key)
        return [column[i] for i in dataset.indices]
    if not hasattr(dataset, "metadata_column"):
        raise ValueError(f"{type(dataset).__name__} has no per-sample metadata to read {key!r} labels from")
    return dataset.metadata_column(key)


def attach_labels(data: TrainData, key: str) -> TrainData:
    """Class labels for the training split from its per-sample field ``key`` (``metadata.json`` of a feature
    directory, or a column of the DSEC builder such as ``scene``); class names sorted."""
    values = _metadata_column(data.train, key)
    if any(v is None or v == "" for v in values):
        raise ValueError(f"metadata field {key!r} is empty for some training samples: every sample needs a class")
    names = sorted({str(v) for v in values})
    if len(names) < 2:
        raise ValueError(f"metadata field {key!r} has {len(names)} class(es) {names}: the text terms need >= 2")
    index = {n: i for i, n in enumerate(names)}
    train = LabelledDataset(data.train, [index[str(v)] for v in values])
    return dataclasses.replace(data, train=train, class_names=names)
