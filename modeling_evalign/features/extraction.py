"""Frozen CLIP encoders -> the feature directory read by ``AlignmentDataset.from_directory``.

Output directory (the format agreed with ``modeling_evalign.data.alignment_dataset``):

* ``event_features.safetensors`` / ``target_features.safetensors``: one float tensor under key ``"features"``,
  shape ``[N, D]`` (pooled) or ``[N, T, D]`` (token level);
* ``metadata.json``: ``num_samples``, ``event_dim``, ``target_dim``, ``event_shape``/``target_shape`` (per
  sample), ``extraction`` (options and encoder fingerprints) and ``samples``: one dict per row with the
  example fields present (``sequence``, ``window_index``, ``window_start_us``, ``window_end_us``,
  ``event_count``, ``rgb_timestamp_us``, ``scene``, ``label``) plus ``split``. Written last: its presence
  marks a finished extraction.

Event features (EventGPT): the ``F`` event frames of a window -> CLIP preprocessing -> tokens of layer
``event_layer`` per frame ``[F, 1+P, D]`` -> :func:`eventgpt_pool` ``[F+1+P, D]`` (``event_pooling="tokens"``)
or the mean of those rows ``[D]`` (``"pooled"``).
Target features (RGB frame): tokens of layer ``target_layer`` (``-2`` = penultimate, as Video-LLaVA) reduced by
``target_tokens``: ``"cls"`` [D], ``"mean"`` (mean of the patch tokens) [D], ``"patch"`` (CLS dropped, as
Video-LLaVA images) [P, D] or ``"all"`` [1+P, D].

Resumable: examples are encoded in shards of ``shard_size`` written atomically under
``<out>/.extract_shards/``; a rerun skips the finished shards (after checking the options and encoders
match), then the shards are streamed into the final files (one shard in memory at a time) and removed.
Defaults (``ExtractionOptions()``): pooled event features from the last layer and the CLS token of the
penultimate layer for the RGB frame, both ``[N, D]``. EventGPT's own layout is ``event_pooling="tokens"``;
Video-LLaVA's image target is ``target_tokens="patch", target_layer=-2``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.io_utils import atomic_write_bytes, atomic_write_json
from .clip_preprocessing import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, clip_preprocess
from .pooling import eventgpt_pool
from .safetensors_concat import concat_safetensors

EVENT_POOLINGS = ("tokens", "pooled")
TARGET_TOKENS = ("cls", "mean", "patch", "all")
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
SHARD_DIR = ".extract_shards"


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


@dataclass
class ExtractionResult:
    """Summary of one :func:`extract_features` call (shapes exclude the sample axis)."""

    output_dir: Path
    num_samples: int
    event_shape: list[int]
    target_shape: list[int]
    shards_computed: int
    shards_skipped: int
    metadata: dict[str, Any] = field(default_factory=dict)


def _layer_tokens(model, pixel_values: torch.Tensor, layer: int) -> torch.Tensor:
    """Hidden states of ``layer`` (index into (embeddings, block 1, ..., block L)): [B, 1+P, D] float32."""
    out = model(pixel_values=pixel_values.to(model.device, model.dtype), output_hidden_states=True)
    hidden = out.hidden_states
    if not -len(hidden) <= layer < len(hidden):
        raise ValueError(f"layer {layer} out of range for a model with {len(hidden)} hidden states")
    return hidden[layer].float().cpu()


def encode_events(model, frames_batch: Sequence[Sequence], options: ExtractionOptions) -> torch.Tensor:
    """Batch of windows, each ``F`` event frames -> [B, F+1+P, D] (``tokens``) or [B, D] (``pooled``)."""
    counts = {len(frames) for frames in frames_batch}
    if len(counts) != 1:
        raise ValueError(
            f"{options.event_key}: every window needs the same number of frames, got {sorted(counts)}"
        )
    num_frames = counts.pop()
    flat = [frame for frames in frames_batch for frame in frames]
    pixels = clip_preprocess(flat, model.config.image_size, options.image_mean, options.image_std)
    tokens = _layer_tokens(model, pixels, options.event_layer)
    tokens = tokens.view(len(frames_batch), num_frames, *tokens.shape[1:])  # [B, F, 1+P, D]
    pooled = eventgpt_pool(tokens)
    return pooled if options.event_pooling == "tokens" else pooled.mean(dim=1)


def encode_targets(model, images: Sequence, options: ExtractionOptions) -> torch.Tensor:
    """RGB images -> [B, D] (``cls``/``mean``) or [B, P, D] / [B, 1+P, D] (``patch``/``all``)."""
    pixels = clip_preprocess(images, model.config.image_size, options.image_mean, options.image_std)
    tokens = _layer_tokens(model, pixels, options.target_layer)
    if options.target_tokens == "cls":
        return tokens[:, 0]
    if options.target_tokens == "mean":
        return tokens[:, 1:].mean(dim=1)
    return tokens[:, 1:] if options.target_tokens == "patch" else tokens


def _model_fingerprint(model) -> str:
    """Hash of the config and of a few weight values: a resumed run must use the same encoder."""
    h = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    for _, p in sorted(model.state_dict().items())[:4]:
        h.update(p.detach().float().cpu().flatten()[:64].numpy().tobytes())
    return h.hexdigest()[:16]


def _check_or_write_manifest(shard_dir: Path, manifest: dict) -> None:
    path = shard_dir / "manifest.json"
    if path.is_file():
        old = json.loads(path.read_text())
        diff = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
        if diff:
            raise ValueError(
                f"{path}: an unfinished extraction with different settings ({diff}) is in this directory; "
                "delete it or use another output directory"
            )
    else:
        atomic_write_json(path, manifest)


def _save_shard(path: Path, event: torch.Tensor, target: torch.Tensor, meta: dict) -> None:
    from safetensors.torch import save

    blob = save(
        {"event": event.contiguous(), "target": target.contiguous()}, metadata={"meta": json.dumps(meta)}
    )
    atomic_write_bytes(path, blob)


def _load_shard_meta(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["meta"])


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
    save_dtype: torch.dtype = torch.float32,
    progress: bool = True,
    _fail_after_shards: int | None = None,
    _on_shard: Callable[[int], None] | None = None,
) -> ExtractionResult:
    """Encode ``examples`` (the builder's rows: a ``datasets.Dataset`` or a list of dicts) into ``output_dir``.

    ``event_encoder``/``target_encoder`` are frozen ``CLIPVisionModel`` s (the target defaults to the event
    encoder). ``batch_size`` windows are encoded per forward pass (``batch_size * F`` event frames);
    ``_fail_after_shards`` is a test hook that raises after that many new shards, as a kill would.
    """
    from tqdm.auto import tqdm

    options = options or ExtractionOptions()
    target_encoder = target_encoder if target_encoder is not None else event_encoder
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be >= 1, got {batch_size} and {shard_size}")
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
        "event_encoder": _model_fingerprint(event_encoder),
        "target_encoder": _model_fingerprint(target_encoder),
    }
    manifest = json.loads(json.dumps(manifest))  # tuples -> lists, as read back from disk
    done = out / "metadata.json"
    if done.is_file() and json.loads(done.read_text()).get("extraction") == manifest:
        return _load_finished(out, num_shards=0)
    shard_dir.mkdir(parents=True, exist_ok=True)
    _check_or_write_manifest(shard_dir, manifest)

    num_shards = (n + shard_size - 1) // shard_size
    computed = skipped = 0
    bar = tqdm(total=n, desc="Extracting features", unit=" windows", disable=not progress)
    for s in range(num_shards):
        path = shard_dir / f"shard-{s:05d}.safetensors"
        lo, hi = s * shard_size, min(n, (s + 1) * shard_size)
        if path.is_file():
            skipped += 1
            bar.update(hi - lo)
            continue
        events, targets, meta = [], [], {k: [] for k in METADATA_FIELDS}
        for b in range(lo, hi, batch_size):
            rows = [examples[i] for i in range(b, min(hi, b + batch_size))]
            for key in (options.event_key, options.image_key):
                if key not in rows[0]:
                    raise KeyError(f"examples: field {key!r} missing; have {sorted(rows[0])}")
            events.append(encode_events(event_encoder, [r[options.event_key] for r in rows], options))
            targets.append(encode_targets(target_encoder, [r[options.image_key] for r in rows], options))
            for k in METADATA_FIELDS:
                meta[k].extend(_plain(r.get(k)) for r in rows)
            bar.update(len(rows))
        _save_shard(path, torch.cat(events).to(save_dtype), torch.cat(targets).to(save_dtype), meta)
        computed += 1
        if _on_shard is not None:
            _on_shard(s)
        if _fail_after_shards is not None and computed >= _fail_after_shards and s + 1 < num_shards:
            bar.close()
            raise RuntimeError(f"test hook: stopped after {computed} new shard(s)")
    bar.close()
    return _finish(out, shard_dir, num_shards, manifest, computed, skipped)


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _finish(out: Path, shard_dir: Path, num_shards: int, manifest: dict, computed: int, skipped: int):
    shards = [shard_dir / f"shard-{s:05d}.safetensors" for s in range(num_shards)]
    per_sample: dict[str, list] = {k: [] for k in METADATA_FIELDS}
    for path in shards:
        meta = _load_shard_meta(path)
        for k in METADATA_FIELDS:
            per_sample[k].extend(meta[k])
    # streamed: one shard in memory at a time (token-level features of a full DSEC duration exceed RAM)
    event_shape = concat_safetensors(shards, "event", out / "event_features.safetensors")
    target_shape = concat_safetensors(shards, "target", out / "target_features.safetensors")
    n = manifest["num_samples"]
    if event_shape[0] != n or target_shape[0] != n:
        raise ValueError(f"{shard_dir}: shards hold {event_shape[0]} samples, expected {n}")
    keys = [k for k, v in per_sample.items() if any(x is not None for x in v)]  # drop all-None fields
    samples = [{k: per_sample[k][i] for k in keys} for i in range(n)]
    if manifest["split"] is not None:
        for sample in samples:
            sample["split"] = manifest["split"]
    metadata = {
        "num_samples": n,
        "event_dim": int(event_shape[-1]),
        "target_dim": int(target_shape[-1]),
        "event_shape": event_shape[1:],
        "target_shape": target_shape[1:],
        "extraction": manifest,
        "samples": samples,
    }
    atomic_write_json(out / "metadata.json", metadata)  # last: marks the directory complete
    shutil.rmtree(shard_dir, ignore_errors=True)
    return ExtractionResult(
        output_dir=out,
        num_samples=n,
        event_shape=event_shape[1:],
        target_shape=target_shape[1:],
        shards_computed=computed,
        shards_skipped=skipped,
        metadata=metadata,
    )


def _load_finished(out: Path, num_shards: int) -> ExtractionResult:
    metadata = json.loads((out / "metadata.json").read_text())
    return ExtractionResult(
        output_dir=out,
        num_samples=metadata["num_samples"],
        event_shape=metadata["event_shape"],
        target_shape=metadata["target_shape"],
        shards_computed=0,
        shards_skipped=num_shards,
        metadata=metadata,
    )


def load_clip_vision(repo_or_path: str, revision: str | None = None, dtype: torch.dtype | None = None):
    """A frozen ``CLIPVisionModel`` in eval mode from a Hub repo id or a local directory."""
    from transformers import CLIPVisionModel

    model = CLIPVisionModel.from_pretrained(repo_or_path, revision=revision, dtype=dtype)
    return model.eval().requires_grad_(False)


def tiny_clip_vision(seed: int = 0, **config_kwargs):
    """A randomly initialised tiny ``CLIPVisionModel`` (``tiny_clip_config``) for tests and the demo."""
    from transformers import CLIPVisionModel

    from .tiny_models import tiny_clip_config

    with torch.random.fork_rng():  # do not disturb the caller's RNG stream
        torch.manual_seed(seed)
        model = CLIPVisionModel(tiny_clip_config(**config_kwargs).vision_config)
    return model.eval().requires_grad_(False)
