"""Video-layout features of the DSEC windows: what the proxy VLM's video path consumes, per window.

Why this target: Video-LLaVA's video path reads per-frame tower tokens in time order (``NUM_FRAMES`` frames x
``1 + P`` tokens, CLS kept), and the motion questions (pan direction, zoom) need that order: a single pooled or
frame-averaged target throws the temporal axis away, so a strategy aligned to it cannot tell "left" from
"right". EventGPT already splits a window into 5 equal-COUNT chunks; event frame ``i`` is aligned to video
frame ``i``, the RGB frame at the end of chunk ``i`` (the latest 20 Hz PNG at or before the chunk's last event).

Per window (all from the same frozen tower, hidden state ``vision_feature_layer = -2``):

* event side ``[F, 1+P, D]``: the window's F EventGPT frames (CLS kept);
* target side ``[F, 1+P, D]``: the RGB frames at the chunk ends (CLS kept: Video-LLaVA's video path);
* single frame ``[P, D]``: the RGB frame at the window's end through the image path (CLS dropped, the brief's
  single-RGB-image LLaVA baseline);
* ground-truth answers ``questions.window_answers(motion, label, t0, t1)`` (seconds since the sequence start).

Stored in the package's feature-directory format (:class:`~modeling_evalign.data.alignment_dataset.
AlignmentDataset`) with the frames flattened, ``[N, F * (1+P), D]``, so every per-token strategy trains on it
unchanged; ``rgb_frame.safetensors`` holds the single-frame tokens ``[N, P, D]`` beside them and the per-window
``samples`` hold the chunk times, the frame indices and the answers. One directory per split, written
atomically: a rerun reuses the finished ones (``metadata.json`` with ``space == VIDEO_SPACE``). The RGB frames'
tokens are computed once per sequence for every frame (:func:`sequence_frame_tokens`) and shared by all durations.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

NUM_FRAMES = 5  # EventGPT's event frames = the video frames of the target
FEATURE_LAYER = -2  # Video-LLaVA's vision_feature_layer
VIDEO_SPACE = "video: EventGPT frames vs RGB frames at the chunk ends, [N, frames * (1 + patches), hidden], CLS kept"
FRAME_FILE = "rgb_frame.safetensors"


def chunk_end_times(t: np.ndarray, window_start_us: int, num_frames: int = NUM_FRAMES) -> np.ndarray:
    """Time (µs) of the last event of each of EventGPT's ``num_frames`` equal-count chunks.

    EventGPT's split: chunk ``i`` holds events ``[i * n // F ... (i + 1) * n // F)`` with ``n // F`` per chunk and the
    remainder in the last (``representations.eventgpt_frames``). An empty chunk (fewer events than frames) takes
    the previous chunk's end, or the window start for the first.
    """
    t = np.asarray(t, dtype=np.int64)
    n, per = int(t.shape[0]), int(t.shape[0]) // num_frames
    out = np.empty(num_frames, dtype=np.int64)
    previous = int(window_start_us)
    for i in range(num_frames):
        last = n - 1 if i == num_frames - 1 else (i + 1) * per - 1
        first = i * per
        if n and last >= first:
            previous = int(t[last])
        out[i] = previous
    return out


def frame_at_or_before(image_timestamps_us: np.ndarray, times_us: np.ndarray) -> np.ndarray:
    """Index of the latest image timestamp ``<= t`` for each time (the first frame for earlier times)."""
    ts = np.asarray(image_timestamps_us, dtype=np.int64)
    idx = np.searchsorted(ts, np.asarray(times_us, dtype=np.int64), side="right") - 1
    return np.clip(idx, 0, ts.size - 1).astype(np.int64)


class _Sequences:
    """Per-sequence readers, timestamps and synthetic metadata, opened on first use (HDF5 lazily)."""

    def __init__(self, tree: Path):
        self.tree, self._cache = Path(tree), {}

    def get(self, name: str) -> dict:
        if name not in self._cache:
            from ..events.dsec_format import TIMESTAMPS_FILE
            from ..events.dsec_reader import DsecEventReader
            from ..events.synthetic_dsec import INFO_FILE

            seq = self.tree / name
            info_path = seq / INFO_FILE
            if not info_path.is_file():
                raise FileNotFoundError(f"{info_path}: the downstream questions need the generator's metadata "
                                        "(motion, label); real DSEC recordings have none")
            info = json.loads(info_path.read_text())
            for key in ("motion", "label", "t_offset_us"):
                if key not in info:
                    raise KeyError(f"{info_path}: expected a {key!r} entry, have {sorted(info)}")
            self._cache[name] = {"dir": seq, "reader": DsecEventReader(seq), "info": info,
                                 "stamps": np.loadtxt(seq / TIMESTAMPS_FILE, dtype=np.int64, ndmin=1)}
        return self._cache[name]


def window_plan(row: dict, seqs: _Sequences, num_frames: int = NUM_FRAMES) -> dict:
    """Chunk ends, the RGB frame indices (per chunk and at the window end) and the answers of one window."""
    from .questions import window_answers

    s = seqs.get(row["sequence"])
    t0, t1 = int(row["window_start_us"]), int(row["window_end_us"])
    events = s["reader"].read_window(t0, t1)
    ends = chunk_end_times(events.t, t0, num_frames)
    offset = int(s["info"]["t_offset_us"])
    answers = window_answers(s["info"]["motion"], s["info"]["label"], (t0 - offset) / 1e6, (t1 - offset) / 1e6)
    return {"chunk_end_us": ends.tolist(), "video_frame_indices": frame_at_or_before(s["stamps"], ends).tolist(),
            "frame_index": int(frame_at_or_before(s["stamps"], [t1])[0]), "answers": answers}


@torch.inference_mode()
def tower_tokens(tower, images: list, layer: int = FEATURE_LAYER) -> torch.Tensor:
    """Hidden state ``layer`` of the frozen tower, CLS kept: ``[len(images), 1 + P, D]`` float32."""
    from ..features.clip_preprocessing import clip_preprocess

    pixels = clip_preprocess(images, tower.config.image_size)
    return tower(pixel_values=pixels, output_hidden_states=True).hidden_states[layer].float()


def _rgb(seq_dir: Path, index: int) -> np.ndarray:
    from PIL import Image

    from ..events.dsec_format import IMAGE_NAME, IMAGES_DIR

    with Image.open(seq_dir / IMAGES_DIR / IMAGE_NAME.format(index)) as im:
        return np.asarray(im.convert("RGB"))


def sequence_frame_tokens(seq_dir: Path, num_images: int, tower, cache_dir: Path, batch_size: int = 64) -> torch.Tensor:
    """Tower tokens (CLS kept) of EVERY RGB frame of a sequence ``[num_images, 1 + P, D]``, cached per sequence in
    ``cache_dir`` (shared by all durations: decoding the PNGs is the stage's main cost; two decoder threads)."""
    from concurrent.futures import ThreadPoolExecutor

    from safetensors.torch import load_file, save

    from ..features.shard_store import model_fingerprint
    from ..utils.io_utils import atomic_write_bytes

    path = Path(cache_dir) / f"{Path(seq_dir).name}.safetensors"
    key = model_fingerprint(tower)
    if path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            fresh = (f.metadata() or {}).get("tower") == key
        if fresh:
            tokens = load_file(str(path))["features"]
            if tokens.shape[0] == num_images:
                return tokens
    out = []
    with ThreadPoolExecutor(2) as pool:  # PIL's PNG decoder releases the GIL
        for lo in range(0, num_images, batch_size):
            images = list(pool.map(lambda k: _rgb(seq_dir, k), range(lo, min(num_images, lo + batch_size))))
            out.append(tower_tokens(tower, images))
    tokens = torch.cat(out).contiguous()
    atomic_write_bytes(path, save({"features": tokens}, metadata={"tower": key}))
    return tokens


def video_split_features(ds, tree: Path, tower, cache_dir: Path, batch_size: int = 32) -> tuple[torch.Tensor, ...]:
    """One split's ``(events [N, F, 1+P, D], targets [N, F, 1+P, D], frame [N, P, D], samples)``."""
    seqs = _Sequences(tree)
    frame_tokens: dict[str, torch.Tensor] = {}
    events, targets, frames, samples = [], [], [], []
    keep = ("sequence", "window_index", "window_start_us", "window_end_us", "event_count", "scene", "label")
    for lo in range(0, len(ds), batch_size):
        rows = ds[lo: lo + batch_size]
        batch = [{k: rows[k][i] for k in keep} for i in range(len(rows["sequence"]))]
        plans = [window_plan(r, seqs) for r in batch]
        f = len(rows["eventgpt_frames"][0])
        if f != NUM_FRAMES:
            raise ValueError(f"eventgpt_frames holds {f} frames per window: expected {NUM_FRAMES} (EventGPT's split)")
        event_images = [np.asarray(im.convert("RGB")) for frames_ in rows["eventgpt_frames"] for im in frames_]
        ev = tower_tokens(tower, event_images)
        events.append(ev.view(len(batch), f, *ev.shape[1:]))
        for r, p in zip(batch, plans):
            name = r["sequence"]
            if name not in frame_tokens:
                s = seqs.get(name)
                frame_tokens[name] = sequence_frame_tokens(s["dir"], len(s["stamps"]), tower, cache_dir)
            tok = frame_tokens[name]
            targets.append(tok[p["video_frame_indices"]][None])
            frames.append(tok[p["frame_index"], 1:][None])  # the image path drops CLS
        samples += [{**r, **p} for r, p in zip(batch, plans)]
    return torch.cat(events), torch.cat(targets), torch.cat(frames), samples


def is_current(folder: Path) -> bool:
    meta = Path(folder) / "metadata.json"
    return meta.is_file() and (Path(folder) / FRAME_FILE).is_file() and json.loads(meta.read_text()).get(
        "space") == VIDEO_SPACE


def build_video_features(splits: dict, tree: Path, out: Path, tower, log=print,
                         frame_cache: Path | None = None) -> dict[str, Path]:
    """Per split: the video-layout feature directory ``out/<split>`` (reused when finished); returns them.
    ``frame_cache``: where the per-sequence RGB frame tokens live (default ``out/rgb_frames``)."""
    from safetensors.torch import save_file

    from ..data.alignment_dataset import AlignmentDataset
    from ..utils.io_utils import atomic_directory

    dirs = {}
    for split, ds in splits.items():
        dirs[split] = Path(out) / split
        if is_current(dirs[split]):
            continue
        ev, tg, frame, samples = video_split_features(ds, tree, tower, frame_cache or Path(out) / "rgb_frames")
        data = AlignmentDataset(ev.flatten(1, 2), tg.flatten(1, 2), {
            "samples": samples, "space": VIDEO_SPACE, "num_frames": NUM_FRAMES, "feature_layer": FEATURE_LAYER,
            "frame_shape": list(frame.shape[1:])})
        with atomic_directory(dirs[split]) as tmp:
            data.save_to_directory(tmp / "data")
            for p in (tmp / "data").iterdir():
                p.rename(tmp / p.name)
            (tmp / "data").rmdir()
            save_file({"features": frame.contiguous()}, str(tmp / FRAME_FILE))
        log(f"    downstream features [{split}]: {len(samples)} windows, video {tuple(ev.shape[1:])}, "
            f"frame {tuple(frame.shape[1:])}")
    return dirs


def load_split(folder: Path):
    """``(AlignmentDataset, frame tokens [N, P, D], num_frames)`` of one video-layout directory."""
    from safetensors.torch import load_file

    from ..data.alignment_dataset import AlignmentDataset

    if not is_current(folder):
        raise FileNotFoundError(f"{folder}: no finished video-layout feature directory (space {VIDEO_SPACE!r})")
    data = AlignmentDataset.from_directory(folder)
    return data, load_file(str(Path(folder) / FRAME_FILE))["features"], int(data.metadata["num_frames"])
