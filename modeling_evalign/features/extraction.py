"""Frozen CLIP encoders -> the feature directory read by ``AlignmentDataset.from_directory``.

Output directory (the format agreed with ``modeling_evalign.data.alignment_dataset``):

* ``event_features.safetensors`` / ``target_features.safetensors``: one float tensor under key ``"features"``,
  shape ``[N, D]`` (pooled) or ``[N, T, D]`` (token level), in ``save_dtype`` (float32 by default);
* ``metadata.json``: ``num_samples``, ``event_dim``, ``target_dim``, ``event_shape``/``target_shape`` (per
  sample), ``extraction`` (options, dtypes and encoder fingerprints) and ``samples``: one dict per row with the
  example fields present (``sequence``, ``window_index``, ``window_start_us``, ``window_end_us``,
  ``event_count``, ``rgb_timestamp_us``, ``scene``, ``label``) plus ``split``. Written last: its presence
  marks a finished extraction.

Event features (EventGPT): the ``F`` event frames of a window -> CLIP preprocessing -> tokens of layer
``event_layer`` per frame ``[F, 1+P, D]`` -> :func:`eventgpt_pool` ``[F+1+P, D]`` (``event_pooling="tokens"``)
or the mean of those rows ``[D]`` (``"pooled"``).
Target features (RGB frame): tokens of layer ``target_layer`` (``-2`` = penultimate, as Video-LLaVA) reduced by
``target_tokens``: ``"cls"`` [D], ``"mean"`` (mean of the patch tokens) [D], ``"patch"`` (CLS dropped, as
Video-LLaVA images) [P, D] or ``"all"`` [1+P, D].

Real sizes: ``batch_size`` windows per forward pass (``batch_size * F`` event frames in one batch),
decoding/rendering/resizing in ``num_workers`` DataLoader workers (:mod:`.window_loader`), ``dtype``
bf16/fp16 under autocast (:mod:`.precision`), and several processes (``process``, see
:mod:`.extraction_distributed`), each encoding a disjoint set of shards; the merged result is bit-identical
to one process. Resumable: examples are encoded in shards of ``shard_size`` written atomically under
``<out>/.extract_shards/`` (:mod:`.shard_store`); a rerun skips the finished shards (after checking the
options and encoders match). Defaults (``ExtractionOptions()``): pooled event features from the last layer
and the CLS token of the penultimate layer for the RGB frame, both ``[N, D]``. EventGPT's own layout is
``event_pooling="tokens"``; Video-LLaVA's image target is ``target_tokens="patch", target_layer=-2``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .clip_preprocessing import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, clip_preprocess
from .extraction_distributed import ExtractionProcess
from .pooling import eventgpt_pool
from .precision import autocast_context, compute_dtype, dtype_name, resolve_dtype
from .shard_store import (
    SHARD_DIR,
    ExtractionResult,
    check_manifest,
    finish,
    finished_result,
    model_fingerprint,
    save_shard,
    shard_path,
    write_manifest,
)
from .window_loader import METADATA_FIELDS, PreparedWindows, window_batches

__all__ = [
    "EVENT_POOLINGS",
    "METADATA_FIELDS",
    "SHARD_DIR",
    "TARGET_TOKENS",
    "ExtractionOptions",
    "ExtractionResult",
    "encode_events",
    "encode_targets",
    "extract_features",
    "load_clip_vision",
    "tiny_clip_vision",
]

EVENT_POOLINGS = ("tokens", "pooled")
TARGET_TOKENS = ("cls", "mean", "patch", "all")


@dataclass
class ExtractionOptions:
    """What to extract; stored in metadata.json and checked when a run resumes."""

    event_pooling: str = "pooled"
    event_layer: int = -1
    target_tokens: str = "cls"
    target_layer: int = -2
    event_key: str = "eventgpt_frames"
    image_key: str = "rgb"
    image_mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    image_std: tuple[float, ...] = OPENAI_CLIP_STD

    def __post_init__(self):
        if self.event_pooling not in EVENT_POOLINGS:
            raise ValueError(f"event_pooling must be one of {EVENT_POOLINGS}, got {self.event_pooling!r}")
        if self.target_tokens not in TARGET_TOKENS:
            raise ValueError(f"target_tokens must be one of {TARGET_TOKENS}, got {self.target_tokens!r}")
        self.image_mean, self.image_std = tuple(self.image_mean), tuple(self.image_std)


def _layer_tokens(model, pixel_values: torch.Tensor, layer: int, dtype: torch.dtype) -> torch.Tensor:
    """Hidden states of ``layer`` (index into (embeddings, block 1, ..., block L)): [B, 1+P, D] float32, on
    the model's device. The last layer is read from ``last_hidden_state`` (no list of all layers kept)."""
    num_hidden = model.config.num_hidden_layers + 1
    if not -num_hidden <= layer < num_hidden:
        raise ValueError(f"layer {layer} out of range for a model with {num_hidden} hidden states")
    last = layer in (-1, num_hidden - 1)
    pixels = pixel_values.to(model.device, model.dtype, non_blocking=True)
    with autocast_context(dtype, model.device):
        out = model(pixel_values=pixels, output_hidden_states=not last)
    return (out.last_hidden_state if last else out.hidden_states[layer]).float()


def _encode_event_pixels(model, pixels: torch.Tensor, options: ExtractionOptions, dtype) -> torch.Tensor:
    """``pixels [B, F, 3, S, S]`` -> [B, F+1+P, D] (``tokens``) or [B, D] (``pooled``), float32 on CPU."""
    b, f = pixels.shape[:2]
    tokens = _layer_tokens(model, pixels.flatten(0, 1), options.event_layer, dtype)
    pooled = eventgpt_pool(tokens.view(b, f, *tokens.shape[1:]))  # [B, F, 1+P, D] -> [B, F+1+P, D]
    return (pooled if options.event_pooling == "tokens" else pooled.mean(dim=1)).cpu()


def _encode_target_pixels(model, pixels: torch.Tensor, options: ExtractionOptions, dtype) -> torch.Tensor:
    tokens = _layer_tokens(model, pixels, options.target_layer, dtype)
    if options.target_tokens == "cls":
        out = tokens[:, 0]
    elif options.target_tokens == "mean":
        out = tokens[:, 1:].mean(dim=1)
    else:
        out = tokens[:, 1:] if options.target_tokens == "patch" else tokens
    return out.cpu()


def encode_events(
    model, frames_batch: Sequence[Sequence], options: ExtractionOptions, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Batch of windows, each ``F`` event frames -> [B, F+1+P, D] (``tokens``) or [B, D] (``pooled``)."""
    counts = {len(frames) for frames in frames_batch}
    if len(counts) != 1:
        raise ValueError(
            f"{options.event_key}: every window needs the same number of frames, got {sorted(counts)}"
        )
    num_frames = counts.pop()
    flat = [frame for frames in frames_batch for frame in frames]
    pixels = clip_preprocess(flat, model.config.image_size, options.image_mean, options.image_std)
    pixels = pixels.view(len(frames_batch), num_frames, *pixels.shape[1:])
    return _encode_event_pixels(model, pixels, options, resolve_dtype(dtype))


def encode_targets(
    model, images: Sequence, options: ExtractionOptions, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """RGB images -> [B, D] (``cls``/``mean``) or [B, P, D] / [B, 1+P, D] (``patch``/``all``)."""
    pixels = clip_preprocess(images, model.config.image_size, options.image_mean, options.image_std)
    return _encode_target_pixels(model, pixels, options, resolve_dtype(dtype))


@torch.inference_mode()
def extract_features(
    examples: Sequence[dict],
    output_dir: str | Path,
    event_encoder,
    target_encoder=None,
    *,
    options: ExtractionOptions | None = None,
    batch_size: int = 8,
    shard_size: int = 256,
    split: str | None = None,
    save_dtype: torch.dtype | str | None = torch.float32,
    dtype: torch.dtype | str = torch.float32,
    num_workers: int = 0,
    process: ExtractionProcess | None = None,
    progress: bool = True,
    _fail_after_shards: int | None = None,
    _on_shard: Callable[[int], None] | None = None,
) -> ExtractionResult:
    """Encode ``examples`` (the builder's rows: a ``datasets.Dataset``, a list of dicts or
    :class:`~.dsec_windows.DsecWindows`) into ``output_dir``.

    ``event_encoder``/``target_encoder`` are frozen ``CLIPVisionModel`` s (the target defaults to the event
    encoder), used on the device they are on. ``batch_size`` windows are encoded per forward pass
    (``batch_size * F`` event frames); ``dtype`` is the compute dtype (bf16/fp16 under autocast),
    ``save_dtype`` the stored one (None: the same as ``dtype``). ``num_workers`` DataLoader workers prepare
    the batches. ``process`` (:func:`~.extraction_distributed.accelerate_process`) makes this call one of
    several processes sharing the work; every process must make the same call. ``_fail_after_shards`` is a
    test hook that raises after that many new shards of this process, as a kill would.
    """
    options = options or ExtractionOptions()
    target_encoder = target_encoder if target_encoder is not None else event_encoder
    dtype = resolve_dtype(dtype)
    save_dtype = dtype if save_dtype is None else resolve_dtype(save_dtype, "save_dtype")
    process = process or ExtractionProcess()
    for name, value in (("batch_size", batch_size), ("shard_size", shard_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if not hasattr(examples, "__len__") or not hasattr(examples, "__getitem__"):
        raise TypeError(f"examples: expected a sized, indexable collection, got {type(examples).__name__}")
    n = len(examples)
    if n == 0:
        raise ValueError("examples: nothing to extract (0 examples)")
    out = Path(output_dir)
    shard_dir = out / SHARD_DIR
    for model in (event_encoder, target_encoder):
        model.eval().requires_grad_(False)
    manifest = {
        "options": asdict(options),
        "num_samples": n,
        "shard_size": shard_size,
        "split": split,
        "save_dtype": str(save_dtype),
        "dtype": dtype_name(dtype),
        "compute_dtype": str(compute_dtype(dtype, event_encoder.device)),
        "event_encoder": model_fingerprint(event_encoder),
        "target_encoder": model_fingerprint(target_encoder),
    }
    manifest = json.loads(json.dumps(manifest))  # tuples -> lists, as read back from disk
    done = out / "metadata.json"
    if done.is_file() and json.loads(done.read_text()).get("extraction") == manifest:
        return finished_result(out, num_processes=process.num_processes)
    if not check_manifest(shard_dir, manifest) and process.is_main:
        write_manifest(shard_dir, manifest)
    process.barrier()
    num_shards = (n + shard_size - 1) // shard_size
    pending = [s for s in range(num_shards) if not shard_path(shard_dir, s).is_file()]
    process.barrier()  # every rank lists the same missing shards before any new one appears
    mine = process.take(pending)
    started = time.perf_counter()
    _encode_shards(
        examples, shard_dir, mine, n, event_encoder, target_encoder, options, batch_size, shard_size,
        dtype, save_dtype, num_workers, progress and process.is_main, _fail_after_shards, _on_shard,
    )
    process.barrier()  # all shards on disk
    seconds = time.perf_counter() - started
    if process.is_main:
        finish(out, shard_dir, num_shards, manifest)
    process.barrier()  # merged
    windows = sum(min(n, (s + 1) * shard_size) - s * shard_size for s in pending)
    return finished_result(
        out,
        shards_computed=len(pending),
        shards_skipped=num_shards - len(pending),
        windows_computed=windows,
        seconds=seconds,
        num_processes=process.num_processes,
    )


def _encode_shards(
    examples, shard_dir, shards, n, event_encoder, target_encoder, options, batch_size, shard_size,
    dtype, save_dtype, num_workers, progress, fail_after, on_shard,
) -> None:
    """Encode and save ``shards`` (this process's share), each in fixed batches of its own windows."""
    from ..utils.progress import progress_bar

    ranges = {s: (s * shard_size, min(n, (s + 1) * shard_size)) for s in shards}
    batches = [
        list(range(b, min(hi, b + batch_size))) for lo, hi in ranges.values() for b in range(lo, hi, batch_size)
    ]
    sizes = event_encoder.config.image_size, target_encoder.config.image_size
    dataset = PreparedWindows(examples, options, *sizes)
    loader = window_batches(dataset, batches, num_workers, pin_memory=event_encoder.device.type == "cuda")
    bar = progress_bar(total=sum(hi - lo for lo, hi in ranges.values()), desc="Extracting features",
                       unit=" windows", disable=not progress)
    computed = 0
    try:
        for s, (lo, hi) in ranges.items():
            events, targets, meta = [], [], {k: [] for k in METADATA_FIELDS}
            for _ in range(lo, hi, batch_size):
                event_pixels, target_pixels, rows = next(loader)
                events.append(_encode_event_pixels(event_encoder, event_pixels, options, dtype))
                targets.append(_encode_target_pixels(target_encoder, target_pixels, options, dtype))
                for k in METADATA_FIELDS:
                    meta[k].extend(r[k] for r in rows)
                bar.update(len(rows))
            event, target = torch.cat(events).to(save_dtype), torch.cat(targets).to(save_dtype)
            save_shard(shard_path(shard_dir, s), event, target, meta)
            computed += 1
            if on_shard is not None:
                on_shard(s)
            if fail_after is not None and computed >= fail_after and computed < len(ranges):
                raise RuntimeError(f"test hook: stopped after {computed} new shard(s)")
    finally:
        bar.close()


def load_clip_vision(repo_or_path: str, revision: str | None = None, dtype: torch.dtype | None = None,
                     what: str = "CLIP tower"):
    """A frozen ``CLIPVisionModel`` in eval mode from a Hub repo id or a local directory; anything that is not a
    complete CLIP vision tower is refused (:func:`modeling_evalign.features.towers.load_clip_vision_tower`)."""
    from .towers import load_clip_vision_tower

    return load_clip_vision_tower(repo_or_path, revision=revision, dtype=dtype, what=what)


def tiny_clip_vision(seed: int = 0, **config_kwargs):
    """A randomly initialised tiny ``CLIPVisionModel`` (``tiny_clip_config``) for tests and the demo."""
    from transformers import CLIPVisionModel

    from .tiny_models import tiny_clip_config

    with torch.random.fork_rng():  # do not disturb the caller's RNG stream
        torch.manual_seed(seed)
        model = CLIPVisionModel(tiny_clip_config(**config_kwargs).vision_config)
    return model.eval().requires_grad_(False)
