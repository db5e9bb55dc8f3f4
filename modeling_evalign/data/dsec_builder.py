"""``DsecAlignmentBuilder``: DSEC (or a synthetic DSEC-layout tree) as a Hugging Face Datasets builder.

One BuilderConfig per window duration: ``200ms 500ms 1s 2s 4s 5s 10s 20s``. Usage (datasets 5 has no Hub
loading scripts; the class is instantiated directly)::

    builder = DsecAlignmentBuilder(config_name="1s", data_dir="/data/dsec/train", cache_dir="/tmp/cache")
    builder.download_and_prepare(num_proc=4)  # one job per group of sequences
    train = builder.as_dataset(split="train")

``data_dir`` holds one folder per sequence in the DSEC layout (``<seq>/events/left/events.h5``,
``<seq>/images/timestamps.txt``, ``<seq>/images/left/rectified/NNNNNN.png``); a real DSEC tree and one from
``dataset_scripts/make_synthetic_dsec.py`` work alike.

Window rule (see :mod:`modeling_evalign.data.windows`): per sequence, non-overlapping consecutive windows of
the config's duration covering the span where events and images overlap (µs on the image clock, i.e. event
``t + t_offset``); the tail shorter than one window is dropped; each window is paired with the RGB frame
nearest to its END.

Split rule: by sequence (no window of one sequence is in two splits): sorted names permuted with
``numpy.random.default_rng(split_seed)``; the first ``round(n * test_fraction)`` are ``test``, the next
``round(n * val_fraction)`` are ``validation``, the rest ``train``. Splits without sequences are left out.
``stratify_by_scene=True`` takes the same counts one scene at a time, keeping a training sequence of every scene
(:func:`~modeling_evalign.data.windows.assign_splits`); a sequence's scene is the photograph in
``evalign_synthetic.json``, else its name without DSEC's recording letter (``zurich_city_00_a`` ->
``zurich_city_00``).

Retrieval positives: consecutive windows of one sequence overlap in content (the scene barely changes from
one window to the next), so treat windows of the same sequence (or of a short time span in it) as one positive
group instead of counting only the same index as correct.

Example fields: ``sequence`` (str), ``window_index`` (int32), ``window_start_us`` / ``window_end_us``
(int64, µs image clock, end exclusive), ``event_count`` (int64), ``rgb`` (Image: the PNG bytes as stored),
``rgb_timestamp_us`` (int64), ``rgb_index`` (int32), ``scene`` and ``label`` (str or None: the photograph
and its class name from ``evalign_synthetic.json`` when present), and per chosen representation:
``eventgpt_frames`` (list of ``num_frames`` Images decoded as RGB, stored as 3-colour palette PNGs;
:func:`~modeling_evalign.events.representations.eventgpt_frames` at the sensor size), ``voxel_grid``
(float32 [num_bins, H, W], not normalised), ``event_histogram`` (float32 [H, W, 3], CEIA histogram image).
RGB frames are embedded as their PNG bytes (a self-contained cache, ready for Parquet export; DSEC's
1440x1080 PNGs make this the bulk of the cache size).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from datasets.utils import logging as ds_logging

from ..utils.errors import InputKeyError
from .windows import DURATIONS_US, assign_splits, nearest_frame_index, usable_span, window_bounds

REPRESENTATIONS = ("eventgpt_frames", "voxel_grid", "event_histogram")
SYNTHETIC_INFO = "evalign_synthetic.json"
_VERSION = datasets.Version("1.0.0")
logger = ds_logging.get_logger(__name__)


@dataclass
class DsecAlignmentConfig(datasets.BuilderConfig):
    """One window duration plus the representation options.

    ``representations``: any of ``eventgpt_frames`` (default), ``voxel_grid``, ``event_histogram``.
    ``sensor_height``/``sensor_width``: event sensor size; None reads it from the recordings (all sequences
    must agree). ``png_compress_level``: zlib level of the event-frame PNGs (1 = fast, 9 = small).
    ``keep_empty_windows``: keep windows with no event (default: skipped, with a warning naming the count).
    """

    window_us: int = 1_000_000
    representations: tuple[str, ...] = ("eventgpt_frames",)
    num_frames: int = 5
    num_bins: int = 5
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0
    stratify_by_scene: bool = False
    sensor_height: int | None = None
    sensor_width: int | None = None
    png_compress_level: int = 1
    # windows without a single event carry no signal; they are skipped (and counted in a warning) unless kept
    keep_empty_windows: bool = False


# EventGPT frames hold three colours only (white canvas, p=1 red, p=0 blue): a palette PNG stores one byte per
# pixel and encodes ~3x faster than RGB; the Image(mode="RGB") feature decodes it back to RGB.
_EVENTGPT_PALETTE = [255, 255, 255, 255, 0, 0, 0, 0, 255]


def _eventgpt_pngs(frames: np.ndarray, level: int) -> list[bytes]:
    """uint8 [F, H, W, 3] EventGPT frames -> palette PNG bytes per frame (index 0 white, 1 red, 2 blue)."""
    from PIL import Image

    green0 = frames[..., 1] == 0  # red (255, 0, 0) or blue (0, 0, 255)
    index = (green0 * (1 + (frames[..., 2] == 255))).astype(np.uint8)
    out = []
    for idx in index:
        image = Image.frombytes("P", (idx.shape[1], idx.shape[0]), idx.tobytes())
        image.putpalette(_EVENTGPT_PALETTE)
        buf = io.BytesIO()
        image.save(buf, format="PNG", compress_level=level)
        out.append(buf.getvalue())
    return out


def find_sequences(data_dir: str | Path) -> list[Path]:
    """Sorted sequence folders of ``data_dir`` (those with ``events/left/events.h5``)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"DSEC data_dir {str(root)!r} does not exist or is not a directory")
    # hidden entries are temporary directories of an interrupted synthetic write, never sequences
    seqs = sorted(p for p in root.iterdir()
                  if not p.name.startswith(".") and (p / "events" / "left" / "events.h5").is_file())
    if not seqs:
        raise FileNotFoundError(f"no sequence with events/left/events.h5 found under {str(root)!r}")
    return seqs


class DsecAlignmentBuilder(datasets.GeneratorBasedBuilder):
    """DSEC event windows paired with RGB frames; see the module docstring for the rules and fields."""

    BUILDER_CONFIG_CLASS = DsecAlignmentConfig
    BUILDER_CONFIGS = [
        DsecAlignmentConfig(name=name, version=_VERSION, window_us=us, description=f"{name} event windows")
        for name, us in DURATIONS_US.items()
    ]
    DEFAULT_CONFIG_NAME = "1s"

    def __init__(self, *args, config_name: str | None = None, **kwargs):
        # Overrides equal to the named config's values are dropped (and representations made a tuple), so
        # equal settings share one cache directory however they were spelled.
        base = self.builder_configs.get(config_name or self.DEFAULT_CONFIG_NAME)
        if "representations" in kwargs and kwargs["representations"] is not None:
            kwargs["representations"] = tuple(kwargs["representations"])
        if base is not None:
            own = set(DsecAlignmentConfig.__dataclass_fields__) - set(
                datasets.BuilderConfig.__dataclass_fields__
            )
            kwargs = {k: v for k, v in kwargs.items() if not (k in own and getattr(base, k) == v)}
        super().__init__(*args, config_name=config_name, **kwargs)

    def _check_config(self) -> None:
        cfg = self.config
        reps = tuple(cfg.representations)
        bad = [r for r in reps if r not in REPRESENTATIONS]
        if not reps or bad:
            raise ValueError(f"representations: expected a non-empty subset of {REPRESENTATIONS}, got {reps}")
        for field in ("window_us", "num_frames", "num_bins"):
            if int(getattr(cfg, field)) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(cfg, field)}")
        if (cfg.sensor_height is None) != (cfg.sensor_width is None):
            raise ValueError("sensor_height and sensor_width must be given together (or both left None)")

    def _features(self, height: int | None, width: int | None) -> datasets.Features | None:
        cfg = self.config
        reps = tuple(cfg.representations)
        if height is None and any(r != "eventgpt_frames" for r in reps):
            return None  # array shapes known once the recordings are opened (_split_generators)
        feats = {
            "sequence": datasets.Value("string"),
            "window_index": datasets.Value("int32"),
            "window_start_us": datasets.Value("int64"),
            "window_end_us": datasets.Value("int64"),
            "event_count": datasets.Value("int64"),
            "rgb": datasets.Image(),
            "rgb_timestamp_us": datasets.Value("int64"),
            "rgb_index": datasets.Value("int32"),
            "scene": datasets.Value("string"),
            "label": datasets.Value("string"),
        }
        if "eventgpt_frames" in reps:
            feats["eventgpt_frames"] = datasets.List(datasets.Image(mode="RGB"), length=cfg.num_frames)
        if "voxel_grid" in reps:
            feats["voxel_grid"] = datasets.Array3D(shape=(cfg.num_bins, height, width), dtype="float32")
        if "event_histogram" in reps:
            feats["event_histogram"] = datasets.Array3D(shape=(height, width, 3), dtype="float32")
        return datasets.Features(feats)

    def sensor_size(self) -> tuple[int, int]:
        """Event sensor ``(height, width)``: from the config, else read once from the recordings."""
        if getattr(self, "_sensor", None) is None:
            cfg = self.config
            if cfg.sensor_height is not None:
                self._sensor = (int(cfg.sensor_height), int(cfg.sensor_width))
            else:
                if cfg.data_dir is None:
                    raise ValueError(
                        "data_dir is required: DsecAlignmentBuilder(config_name=..., data_dir=...)"
                    )
                sizes = {p.name: _sensor_size(p) for p in find_sequences(cfg.data_dir)}
                if len(set(sizes.values())) != 1:
                    raise ValueError(
                        f"sequences have different sensor sizes {sizes}; set sensor_height/width"
                    )
                self._sensor = next(iter(sizes.values()))
        return self._sensor

    def _info(self) -> datasets.DatasetInfo:
        self._check_config()
        return datasets.DatasetInfo(
            description=__doc__.split("\n\n")[0],
            features=self._features(self.config.sensor_height, self.config.sensor_width),
            homepage="https://dsec.ifi.uzh.ch/",
            license="CC BY-SA 4.0 (DSEC); synthetic trees: same as the source photographs",
        )

    def _split_generators(self, dl_manager):
        cfg = self.config
        if cfg.data_dir is None:
            raise ValueError("data_dir is required: DsecAlignmentBuilder(config_name=..., data_dir=...)")
        seqs = find_sequences(cfg.data_dir)
        height, width = self.sensor_size()
        self.info.features = self._features(height, width)
        groups = {p.name: sequence_scene(p) for p in seqs} if cfg.stratify_by_scene else None
        assignment = assign_splits(
            [p.name for p in seqs], cfg.val_fraction, cfg.test_fraction, cfg.split_seed, groups=groups
        )
        generators = []
        for split in ("train", "validation", "test"):
            members = [str(p) for p in seqs if assignment[p.name] == split]
            if members:  # a list: datasets shards it over num_proc jobs, by sequence
                generators.append(datasets.SplitGenerator(name=split, gen_kwargs={"sequence_dirs": members}))
        return generators

    def _generate_examples(self, sequence_dirs: list[str]):
        from datasets.builder import Key

        for shard, seq_dir in enumerate(sequence_dirs):
            for k, record in enumerate(self._sequence_examples(Path(seq_dir))):
                yield Key(shard, k), record

    def _sequence_examples(self, seq_dir: Path):
        """Examples of one sequence, in time order (see the module docstring)."""
        from ..events.recording_checks import check_sequence_clocks, decoded_png_bytes
        from ..events.representations import event_histogram_image, eventgpt_frames, voxel_grid

        cfg = self.config
        height, width = self.sensor_size()
        reps = tuple(cfg.representations)
        sequence = _open_sequence(seq_dir, height, width)
        events = sequence.events
        timestamps = sequence.image_timestamps_us
        check_sequence_clocks(sequence, events.time_range_us)  # PNG count, t_offset: never drop it silently
        start, end = usable_span(*events.time_range_us, timestamps)
        bounds = window_bounds(start, end, int(cfg.window_us))
        frame_idx = nearest_frame_index(timestamps, bounds[:, 1])
        scene, label = _scene_and_label(seq_dir)
        empty = 0
        for k, ((t0, t1), fi) in enumerate(zip(bounds.tolist(), frame_idx.tolist())):
            w = events.read_window(t0, t1)
            if len(w) == 0 and not cfg.keep_empty_windows:
                empty += 1
                continue
            image_path = sequence.image_path(fi)
            record = {
                "sequence": seq_dir.name,
                "window_index": k,
                "window_start_us": t0,
                "window_end_us": t1,
                "event_count": int(len(w.t)),
                # decoded once here, so a corrupt PNG is named now, not as <_io.BytesIO> in a later stage
                "rgb": {"bytes": decoded_png_bytes(image_path, seq_dir.name, fi), "path": image_path.name},
                "rgb_timestamp_us": int(timestamps[fi]),
                "rgb_index": fi,
                "scene": scene,
                "label": label,
            }
            try:
                if "eventgpt_frames" in reps:
                    frames = eventgpt_frames(w.x, w.y, w.t, w.p, height, width, num_frames=cfg.num_frames)
                    pngs = _eventgpt_pngs(frames, cfg.png_compress_level)
                    record["eventgpt_frames"] = [{"bytes": b, "path": None} for b in pngs]
                if "voxel_grid" in reps:
                    record["voxel_grid"] = voxel_grid(w.x, w.y, w.t, w.p, cfg.num_bins, height, width)
                if "event_histogram" in reps:
                    record["event_histogram"] = event_histogram_image(w.x, w.y, w.t, w.p, height, width)
            except (ValueError, TypeError) as err:  # x >= width, p = 7, ...: name the file and the window
                raise ValueError(f"{events.path} (sequence {seq_dir.name}, window {k} [{t0}, {t1}) µs): {err}") from None
            yield record
        if empty:
            logger.warning("sequence %s: skipped %d of %d windows with no event (keep_empty_windows=True keeps them)",
                           seq_dir.name, empty, len(bounds))


def sequence_scene(seq_dir: Path) -> str:
    """The scene a sequence shows, for the stratified split: the synthetic photograph, else the name without
    DSEC's trailing recording letter (``zurich_city_00_a`` -> ``zurich_city_00``)."""
    import re

    scene, _ = _scene_and_label(seq_dir)
    return scene if scene is not None else re.sub(r"_[a-z]$", "", seq_dir.name)


def _scene_and_label(seq_dir: Path) -> tuple[str | None, str | None]:
    """``(scene, label)`` from the synthetic generator's json; ``(None, None)`` for real recordings."""
    path = seq_dir / SYNTHETIC_INFO
    if not path.is_file():
        return None, None
    info = json.loads(path.read_text())
    if "scene" not in info:
        raise InputKeyError(f"{path}: expected a 'scene' entry, have {sorted(info)}")
    label = info.get("label")
    return str(info["scene"]), None if label is None else str(label)


# --- the DSEC reader of modeling_evalign.events (imported on use: h5py stays out of package import) ---


def _sensor_size(seq_dir: Path) -> tuple[int, int]:
    from ..events.dsec_reader import DsecEventReader

    return DsecEventReader(seq_dir).sensor_size


def _open_sequence(seq_dir: Path, height: int, width: int):
    from ..events.dsec_reader import DsecSequence

    return DsecSequence(seq_dir, height, width)
