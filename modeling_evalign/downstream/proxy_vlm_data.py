"""Training data of the proxy VLM: RGB sequences rendered by the synthetic generator's renderer, the frozen tower's
features of their frames (computed once), and question windows with ground truth from :mod:`.questions`.

A *sequence* is one photograph under one random :class:`CameraMotion` (speed drawn as ``write_synthetic_dsec``
draws it), rendered on a ``frame_rate_hz`` clock (DSEC's 20 Hz). Held-out sequences draw their motions from
another seed stream. A *window* ``[t0, t1]`` of a sequence is seen as ``num_frames`` frames: the frame at the end
of each of ``num_frames`` equal parts of the window, quantised to the frame clock (the latest frame at or before
that time), as the DSEC tree's PNGs give them. The image path sees one frame: the one at the window's end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..events.scenes import PHOTOS, CameraMotion, PhotoScene, load_photo
from .questions import QUESTION_TYPES, window_answers

_SPLIT_STREAM = {"train": 31, "test": 47}  # seed streams: held-out camera paths never coincide with training ones
_EPS = 1e-9


@dataclass
class SequenceSet:
    """Frames of every sequence on one clock: ``frames [S, T, 3, H, W]`` uint8, per sequence its label and motion."""

    frames: torch.Tensor
    labels: list[str]
    motions: list[CameraMotion]
    frame_rate_hz: float

    @property
    def seconds(self) -> float:
        return self.frames.shape[1] / self.frame_rate_hz


@dataclass
class Window:
    """One question: sequence ``seq``, window ``[t0, t1]`` s, its frame indices, question type and answer."""

    seq: int
    t0: float
    t1: float
    frames: tuple[int, ...]
    qtype: str
    answer: str


def render_sequences(photos: Sequence[str], split: str, sequences_per_photo: int, seconds: float,
                     frame_rate_hz: float, render_size: tuple[int, int], seed: int) -> SequenceSet:
    """``sequences_per_photo`` random camera paths per photograph, frames at ``k / frame_rate_hz`` for
    ``k < seconds * frame_rate_hz`` (``render_size`` = (width, height))."""
    if split not in _SPLIT_STREAM:
        raise ValueError(f"split={split!r}: expected one of {sorted(_SPLIT_STREAM)}")
    width, height = render_size
    times_us = np.arange(int(round(seconds * frame_rate_hz))) / frame_rate_hz * 1e6
    frames, labels, motions = [], [], []
    for c, name in enumerate(photos):
        scene = PhotoScene(load_photo(name), blur_sigma=1.0)
        for s in range(sequences_per_photo):
            rng = np.random.default_rng([seed, _SPLIT_STREAM[split], c, s])
            motion = scene.motion = CameraMotion.random(rng, speed=float(rng.uniform(0.3, 1.0)))
            rgb = scene.render(times_us, height, width, rgb=True)  # [T, H, W, 3] float 0..255
            frames.append(torch.from_numpy(np.round(rgb).astype(np.uint8)).permute(0, 3, 1, 2))
            labels.append(PHOTOS[name])
            motions.append(motion)
    return SequenceSet(torch.stack(frames), labels, motions, frame_rate_hz)


def window_frame_indices(t0: float, t1: float, num_frames: int, frame_rate_hz: float) -> tuple[int, ...]:
    """Frame-clock indices of the ends of ``num_frames`` equal parts of ``[t0, t1]`` (latest frame at or before)."""
    ends = t0 + (np.arange(1, num_frames + 1) / num_frames) * (t1 - t0)
    return tuple(int(math.floor(t * frame_rate_hz + _EPS)) for t in ends)


def sample_windows(seqs: SequenceSet, count: int, durations: Sequence[float], seed: int, num_frames: int,
                   fixed_fraction: float = 0.5, qtypes: Sequence[str] = QUESTION_TYPES) -> list[Window]:
    """``count`` windows (each with every question it asks): a ``fixed_fraction`` of them take one of ``durations``
    exactly, the rest a log-uniform duration between their min and max; start uniform on the frame clock's span."""
    rng = np.random.default_rng([seed, 7])
    lo, hi = min(durations), max(durations)
    windows: list[Window] = []
    for _ in range(count):
        s = int(rng.integers(len(seqs.labels)))
        dur = float(rng.choice(durations)) if rng.random() < fixed_fraction else float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        t0 = float(rng.uniform(0, seqs.seconds - 1.0 / seqs.frame_rate_hz - dur))
        windows += _questions(seqs, s, t0, t0 + dur, num_frames, qtypes)
    return windows


def grid_windows(seqs: SequenceSet, duration: float, num_frames: int, qtypes: Sequence[str] = QUESTION_TYPES,
                 stride: float | None = None) -> list[Window]:
    """Consecutive windows of one ``duration`` over every sequence (the held-out evaluation at that duration)."""
    stride = stride or duration
    out: list[Window] = []
    for s in range(len(seqs.labels)):
        t0 = 0.0
        while t0 + duration <= seqs.seconds - 1.0 / seqs.frame_rate_hz + _EPS:
            out += _questions(seqs, s, t0, t0 + duration, num_frames, qtypes)
            t0 += stride
    return out


def _questions(seqs, s, t0, t1, num_frames, qtypes) -> list[Window]:
    answers = window_answers(seqs.motions[s], seqs.labels[s], t0, t1)
    idx = window_frame_indices(t0, t1, num_frames, seqs.frame_rate_hz)
    return [Window(s, t0, t1, idx, q, answers[q]) for q in qtypes if answers[q] is not None]


@torch.inference_mode()
def tower_tokens(tower, frames: torch.Tensor, image_size: int, layer: int = -2, batch: int = 512) -> torch.Tensor:
    """The frozen vision tower's ``hidden_states[layer]`` (CLS kept) of uint8 frames ``[..., 3, H, W]``, with the
    CLIP test-time preprocessing feature extraction applies -> float32 ``[..., tokens, hidden]``."""
    from ..features.clip_preprocessing import clip_preprocess_tensor

    flat = frames.reshape(-1, *frames.shape[-3:])
    out = []
    for i in range(0, len(flat), batch):
        pixels = clip_preprocess_tensor(flat[i : i + batch].float() / 255.0, image_size)
        out.append(tower(pixel_values=pixels, output_hidden_states=True).hidden_states[layer].float())
    feats = torch.cat(out)
    return feats.reshape(*frames.shape[:-3], *feats.shape[-2:])
