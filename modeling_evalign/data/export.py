"""Export the DSEC builder's configurations as Parquet shards plus a dataset card, Hub-ready.

Layout of the exported folder (written in a temporary folder, renamed into place when complete)::

    README.md                                  card rendered from hub_cards/dataset_card.md.jinja, YAML with
                                               one ``configs:`` entry per duration (data_files per split)
    data/<duration>/<split>-0000i-of-0000n.parquet

``datasets.load_dataset(folder, name="1s")`` (or the Hub repo after upload) loads one duration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..utils.io_utils import atomic_directory, check_output_directory
from .windows import DURATIONS_US, duration_us

DEFAULT_REPO_ID = "evalign/dsec-alignment"
_FIELD_MEANINGS = {
    "sequence": "DSEC sequence folder name",
    "window_index": "index of the window in its sequence (time order)",
    "window_start_us": "window start, µs, image clock (inclusive)",
    "window_end_us": "window end, µs, image clock (exclusive)",
    "event_count": "number of events in the window",
    "rgb": "rectified left RGB frame nearest to the window end (PNG as recorded)",
    "rgb_timestamp_us": "timestamp of that frame, µs",
    "rgb_index": "index of that frame in images/timestamps.txt",
    "scene": "photograph of a synthetic sequence (evalign_synthetic.json), else null",
    "label": "class name of that photograph (zero-shot prompts), else null",
    "eventgpt_frames": "EventGPT event frames (PNG), equal event-count split",
    "voxel_grid": "E2VID voxel grid [num_bins, H, W] float32, not normalised",
    "event_histogram": "CEIA histogram image [H, W, 3] float32 in [0, 1]",
}


@dataclass
class ExportResult:
    """Where the export went and the number of windows per duration and split."""

    output_dir: Path
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def export_dsec(
    data_dir: str | Path,
    output_dir: str | Path,
    durations: Sequence[str] = tuple(DURATIONS_US),
    *,
    repo_id: str = DEFAULT_REPO_ID,
    cache_dir: str | Path | None = None,
    num_proc: int | None = None,
    max_rows_per_shard: int = 1000,
    max_shard_bytes: int = 500_000_000,
    source_description: str | None = None,
    **config_kwargs,
) -> ExportResult:
    """Prepare each duration with ``DsecAlignmentBuilder`` and write Parquet shards + README.md atomically.

        ``config_kwargs`` go to every BuilderConfig (e.g. ``representations=("eventgpt_frames", "voxel_grid")``,
        ``val_fraction``). A split is cut into contiguous Parquet shards of at most ``max_rows_per_shard`` rows and
    about ``max_shard_bytes`` of Arrow data (DSEC's 1440x1080 PNGs are ~2 MB per row). Durations already prepared
    in ``cache_dir`` are not rebuilt, so a killed export resumes at the duration it was working on.
    """
    from ..hub.paths import find_machine_paths
    from .dsec_builder import DsecAlignmentBuilder

    for d in durations:
        duration_us(d)  # raises on unknown names before any work
    if source_description and find_machine_paths(source_description):
        raise ValueError(f"source_description={source_description!r} contains a machine path: describe the "
                         "recordings in words (the card is uploaded)")
    if not durations:
        raise ValueError(f"durations: expected at least one of {list(DURATIONS_US)}")
    if max_rows_per_shard < 1 or max_shard_bytes < 1:
        raise ValueError(
            f"max_rows_per_shard and max_shard_bytes must be >= 1, got {max_rows_per_shard}, {max_shard_bytes}"
        )
    check_output_directory(output_dir)  # a user's folder (or a file) at --out is refused before any build
    result = ExportResult(output_dir=Path(output_dir))
    configs, table, split_sequences, first = [], [], {}, None
    with atomic_directory(output_dir) as tmp:
        for d in durations:
            builder = DsecAlignmentBuilder(
                config_name=d,
                data_dir=str(data_dir),
                cache_dir=None if cache_dir is None else str(cache_dir),
                **config_kwargs,
            )
            builder.download_and_prepare(num_proc=num_proc)
            first = first or builder
            data_files, counts = [], {}
            for split in builder.info.splits:
                if builder.info.splits[split].num_examples == 0:
                    continue  # e.g. recordings shorter than the window: datasets cannot open an empty split
                ds = builder.as_dataset(split=split)
                counts[split] = len(ds)
                n = max(
                    1, math.ceil(len(ds) / max_rows_per_shard), math.ceil(ds.data.nbytes / max_shard_bytes)
                )
                n = min(n, len(ds))
                for i in range(n):
                    rel = f"data/{d}/{split}-{i:05d}-of-{n:05d}.parquet"
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    ds.shard(num_shards=n, index=i, contiguous=True).to_parquet(str(tmp / rel))
                    result.files.append(rel)
                data_files.append({"split": split, "path": f"data/{d}/{split}-*.parquet"})
                split_sequences.setdefault(split, sorted(set(ds["sequence"])))
            if not data_files:
                raise ValueError(f"duration {d}: no window fits in the recordings under {str(data_dir)!r}")
            entry = {"config_name": d, "data_files": data_files}
            if d == "1s" or (d == durations[0] and "1s" not in durations):
                entry["default"] = True
            configs.append(entry)
            table.append({"name": d, "window_ms": duration_us(d) // 1000, "counts": counts})
            result.counts[d] = counts
        _write_card(tmp, configs, table, split_sequences, first, repo_id, source_description, data_dir)
    return result


def _type_name(feature) -> str:
    """Readable type of a datasets feature for the card's field table."""
    kind = getattr(feature, "_type", type(feature).__name__)
    if kind.startswith("Array"):
        return f"{feature.dtype} {list(feature.shape)}"
    if kind == "List":
        size = f" x {feature.length}" if feature.length and feature.length > 0 else ""
        return f"list of {_type_name(feature.feature)}{size}"
    return str(feature.dtype) if kind == "Value" else kind.lower()


def _write_card(tmp: Path, configs, table, split_sequences, builder, repo_id, source_description, data_dir) -> None:
    from huggingface_hub import DatasetCard, DatasetCardData

    from ..hub.card_facts import describe_dsec_tree
    from ..hub.templates import template_path
    from .windows import SPLIT_RULE

    cfg = builder.config
    recordings = describe_dsec_tree(data_dir)  # synthetic (evalign's generator, its settings) or real DSEC
    synthetic = recordings["synthetic"]
    card_data = DatasetCardData(
        pretty_name="Synthetic DSEC-layout event-RGB windows (evalign generator)" if synthetic
        else "DSEC event-RGB alignment windows",
        license="cc-by-sa-4.0",
        task_categories=["feature-extraction"],
        tags=["event-camera", "dsec", "evalign", *(["synthetic"] if synthetic else [])],
        configs=configs,
    )
    features = builder.info.features
    fields = [
        {"name": k, "type": _type_name(v), "meaning": _FIELD_MEANINGS.get(k, "")} for k, v in features.items()
    ]
    default = next(c["config_name"] for c in configs if c.get("default"))
    card = DatasetCard.from_template(
        card_data,
        template_path=str(template_path("dataset_card.md.jinja")),
        pretty_name=card_data.pretty_name,
        repo_id=repo_id,
        default_config=default,
        source_description=source_description or (
            f"{recordings['sequences']} synthetic sequences written by evalign's generator" if synthetic
            else f"{recordings['sequences']} DSEC recordings"),
        recordings=recordings,
        configs_table=table,
        split_names=list(split_sequences),
        fields=fields,
        representations=list(cfg.representations),
        sensor_height=builder.sensor_size()[0],
        sensor_width=builder.sensor_size()[1],
        num_frames=cfg.num_frames,
        split_rule=SPLIT_RULE + f" Here val_fraction={cfg.val_fraction}, test_fraction={cfg.test_fraction}, "
        f"split_seed={cfg.split_seed}.",
        split_sequences=split_sequences,
        license_note=(
            "DSEC (https://dsec.ifi.uzh.ch/) is released under CC BY-SA 4.0; synthetic trees made with "
            "evalign animate scikit-image sample photographs."
        ),
    )
    card.save(str(tmp / "README.md"))
