"""The resumable on-disk state of an extraction: ``<out>/.extract_shards/`` (manifest + shards) -> final files.

``manifest.json`` records what is being extracted (options, sample count, shard size, dtypes, encoder
fingerprints); a rerun with other settings is refused rather than mixing shards. Each shard holds the
features of a fixed range of windows plus their metadata and is written atomically, so a killed run leaves
only whole shards. :func:`finish` streams the shards into ``event_features.safetensors`` /
``target_features.safetensors`` (one shard in memory at a time), writes ``metadata.json`` last (its
presence marks a finished extraction) and removes the shard folder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..utils.io_utils import atomic_write_bytes, atomic_write_json
from .safetensors_concat import concat_safetensors
from .window_loader import METADATA_FIELDS

SHARD_DIR = ".extract_shards"


@dataclass
class ExtractionResult:
    """Summary of one ``extract_features`` call (shapes exclude the sample axis).

    ``windows_computed``/``seconds``: windows encoded by this call (all processes) and the wall time of
    the encoding; ``windows_per_second`` is their ratio (0 when nothing was left to encode).
    """

    output_dir: Path
    num_samples: int
    event_shape: list[int]
    target_shape: list[int]
    shards_computed: int
    shards_skipped: int
    metadata: dict[str, Any] = field(default_factory=dict)
    windows_computed: int = 0
    seconds: float = 0.0
    num_processes: int = 1

    @property
    def windows_per_second(self) -> float:
        return self.windows_computed / self.seconds if self.seconds > 0 else 0.0


def shard_path(shard_dir: Path, s: int) -> Path:
    return shard_dir / f"shard-{s:05d}.safetensors"


def model_fingerprint(model) -> str:
    """Hash of the config and of a few weight values: a resumed run must use the same encoder."""
    h = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    for _, p in sorted(model.state_dict().items())[:4]:
        h.update(p.detach().float().cpu().flatten()[:64].numpy().tobytes())
    return h.hexdigest()[:16]


def check_manifest(shard_dir: Path, manifest: dict) -> bool:
    """True when ``manifest.json`` exists and matches; ValueError when it exists and differs."""
    path = shard_dir / "manifest.json"
    if not path.is_file():
        return False
    old = json.loads(path.read_text())
    diff = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
    if diff:
        raise ValueError(
            f"{path}: an unfinished extraction with different settings ({diff}) is in this directory; "
            "delete it or use another output directory"
        )
    return True


def write_manifest(shard_dir: Path, manifest: dict) -> None:
    shard_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(shard_dir / "manifest.json", manifest)


def save_shard(path: Path, event: torch.Tensor, target: torch.Tensor, meta: dict) -> None:
    from safetensors.torch import save

    blob = save(
        {"event": event.contiguous(), "target": target.contiguous()}, metadata={"meta": json.dumps(meta)}
    )
    atomic_write_bytes(path, blob)


def _load_shard_meta(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["meta"])


def finish(out: Path, shard_dir: Path, num_shards: int, manifest: dict) -> dict:
    """Merge the shards into the final files; returns the metadata written to ``metadata.json``."""
    shards = [shard_path(shard_dir, s) for s in range(num_shards)]
    missing = [p.name for p in shards if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{shard_dir}: shards missing before the merge: {missing[:5]}")
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
    return metadata


def finished_result(out: Path, **counts) -> ExtractionResult:
    metadata = json.loads((out / "metadata.json").read_text())
    return ExtractionResult(
        output_dir=out,
        num_samples=metadata["num_samples"],
        event_shape=metadata["event_shape"],
        target_shape=metadata["target_shape"],
        shards_computed=counts.pop("shards_computed", 0),
        shards_skipped=counts.pop("shards_skipped", 0),
        metadata=metadata,
        **counts,
    )
