"""Training data of the proxy CLIP: RGB frames of the synthetic generator's scenes, captions from their metadata,
batched augmentations and an offline BPE tokenizer.

Frames come from :class:`~modeling_evalign.events.scenes.PhotoScene` (the renderer behind
``write_synthetic_dsec``): each *sequence* is one photograph under one random :class:`CameraMotion`, sampled at
``frames_per_sequence`` times. Held-out sequences use motions drawn from a different seed stream, so the test
frames are camera paths the tower never saw. Captions describe what the metadata says about a frame: the
photograph's class label, the camera's dominant motion (moving left/right/up/down or still), zoom direction and
level, and tilt, e.g. ``"a photo of the cat, camera moving left, zooming in, close-up, tilted right"``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..events.scenes import PHOTOS, CameraMotion, PhotoScene, load_photo
from .clip_preprocessing import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, clip_preprocess_tensor

TEMPLATES = ("a photo of the {}", "a picture of the {}", "a frame showing the {}", "the {} seen by a camera")
ZERO_SHOT_TEMPLATE = "a photo of the {}"
# split-dependent seed streams: the held-out motions never coincide with training ones
_SPLIT_STREAM = {"train": 11, "test": 23}


@dataclass
class FrameSet:
    """Rendered frames ``[N, 3, H, W]`` uint8 and, per frame, its class index, sequence id and caption parts."""

    images: torch.Tensor
    labels: torch.Tensor
    sequences: list[str]
    parts: list[dict]

    def __len__(self) -> int:
        return len(self.images)


def motion_words(motion: CameraMotion, t_s: float, dt: float = 0.05) -> dict:
    """Caption parts of one frame from the camera pose: pan direction, zoom direction and level, tilt."""
    (cx0, cx1), (cy0, cy1), (z0, z1), (a0, _) = (np.broadcast_to(v, (2,)).tolist() for v in motion.pose(np.array([t_s, t_s + dt])))
    vx, vy = (cx1 - cx0) / dt, (cy1 - cy0) / dt
    if max(abs(vx), abs(vy)) < 0.01:
        pan = "camera still"
    elif abs(vx) >= abs(vy):
        # the view centre moves right in the photo: the camera pans right
        pan = "camera moving right" if vx > 0 else "camera moving left"
    else:
        pan = "camera moving down" if vy > 0 else "camera moving up"
    dz = (z1 - z0) / dt
    zoom = "" if abs(dz) < 0.005 else ("zooming in" if dz < 0 else "zooming out")
    level = "close-up" if z0 < 0.55 else ("wide view" if z0 > 0.68 else "")
    tilt = "" if abs(a0) < 0.04 else ("tilted right" if a0 > 0 else "tilted left")
    return {"pan": pan, "zoom": zoom, "level": level, "tilt": tilt}


def caption(label: str, parts: dict, template: str = TEMPLATES[0], flipped: bool = False) -> str:
    """One caption; ``flipped``: the image was mirrored left-right, so left and right swap in the words."""
    words = [template.format(label)] + [parts[k] for k in ("pan", "zoom", "level", "tilt") if parts[k]]
    text = ", ".join(words)
    if flipped:
        text = text.replace("left", "\0").replace("right", "left").replace("\0", "right")
    return text


def render_frames(
    photos: Sequence[str],
    split: str,
    sequences_per_photo: int,
    frames_per_sequence: int,
    render_size: tuple[int, int],
    seed: int,
    seconds: float = 16.0,
) -> FrameSet:
    """Frames of ``sequences_per_photo`` random camera paths per photograph (``render_size`` = (width, height))."""
    if split not in _SPLIT_STREAM:
        raise ValueError(f"split={split!r}: expected one of {sorted(_SPLIT_STREAM)}")
    width, height = render_size
    images, labels, seqs, parts = [], [], [], []
    times = (np.arange(frames_per_sequence) + 0.5) * (seconds / frames_per_sequence)
    for c, name in enumerate(photos):
        scene = PhotoScene(load_photo(name), blur_sigma=1.0)  # blurred once, then one motion per sequence
        for s in range(sequences_per_photo):
            rng = np.random.default_rng([seed, _SPLIT_STREAM[split], c, s])
            motion = scene.motion = CameraMotion.random(rng, speed=float(rng.uniform(0.3, 1.0)))
            frames = scene.render(times * 1e6, height, width, rgb=True)  # [T, H, W, 3] float 0..255
            images.append(torch.from_numpy(np.round(frames).astype(np.uint8)).permute(0, 3, 1, 2))
            labels += [c] * len(times)
            seqs += [f"{split}-{name}-{s}"] * len(times)
            parts += [motion_words(motion, float(t)) for t in times]
    return FrameSet(torch.cat(images), torch.tensor(labels), seqs, parts)


def augment(
    images: torch.Tensor,
    image_size: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.5, 1.0),
    jitter: float = 0.3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random resized crop (area ``scale``, aspect 3/4..4/3), horizontal flip and colour jitter (brightness,
    contrast, saturation by up to ``jitter``) of uint8 ``[B, 3, H, W]`` -> CLIP pixel values
    ``[B, 3, S, S]`` and the flip flags ``[B]`` (captions swap left and right for flipped images)."""
    b, _, h, w = images.shape
    x = images.float() / 255.0
    area = torch.empty(b).uniform_(*scale, generator=generator)
    log_ratio = torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3), generator=generator)
    ratio = torch.exp(log_ratio)
    # crop height and width as fractions of the frame's (grid_sample's [-1, 1] half-extents)
    ch = torch.sqrt(area * h * w / ratio).clamp(max=h) / h
    cw = torch.sqrt(area * h * w * ratio).clamp(max=w) / w
    cx = (torch.rand(b, generator=generator) * 2 - 1) * (1 - cw)
    cy = (torch.rand(b, generator=generator) * 2 - 1) * (1 - ch)
    flip = torch.rand(b, generator=generator) < 0.5
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = torch.where(flip, -cw, cw)
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = ch
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, (b, 3, image_size, image_size), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    factors = 1 + (torch.rand(b, 3, generator=generator) * 2 - 1) * jitter
    x = x * factors[:, 0].view(b, 1, 1, 1)  # brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factors[:, 1].view(b, 1, 1, 1) + mean  # contrast
    grey = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    x = (x - grey) * factors[:, 2].view(b, 1, 1, 1) + grey  # saturation
    x = x.clamp(0, 1)
    mean_t = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std_t = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    return (x - mean_t) / std_t, flip


def eval_pixels(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """Test-time preprocessing: exactly what feature extraction applies (shortest side, centre crop)."""
    return clip_preprocess_tensor(images.float() / 255.0, image_size)


def all_caption_texts(photos: Sequence[str]) -> list[str]:
    """Every caption the generator can write for ``photos`` (the tokenizer's training corpus)."""
    texts = []
    pans = ["camera still"] + [f"camera moving {d}" for d in ("left", "right", "up", "down")]
    for name in photos:
        label = PHOTOS[name]
        for template in TEMPLATES:
            for pan in pans:
                for zoom in ("", "zooming in", "zooming out"):
                    for level in ("", "close-up", "wide view"):
                        for tilt in ("", "tilted left", "tilted right"):
                            texts.append(caption(label, {"pan": pan, "zoom": zoom, "level": level, "tilt": tilt}, template))
    return texts


def build_tokenizer(photos: Sequence[str], vocab_size: int = 1024, max_length: int = 32):
    """A ``CLIPTokenizer`` (byte-level BPE with ``</w>`` word ends, CLIP's normaliser and pre-tokeniser) whose
    merges are learnt here on every caption the generator can write for ``photos``.

    The merges are learnt by :func:`learn_bpe_merges` (ties broken by the pair's text), not by the
    ``tokenizers`` trainer, whose tie order differs between processes: a tower resumed in another process
    must see the same token ids."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    template = CLIPTokenizer()  # empty vocabulary: only its normaliser and pre-tokeniser are used
    backend = template.backend_tokenizer
    words: dict[str, int] = {}
    for text in all_caption_texts(photos):
        for word, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text)):
            words[word] = words.get(word, 0) + 1
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for symbol in alphabet + [c + "</w>" for c in alphabet]:
        vocab.setdefault(symbol, len(vocab))
    merges = learn_bpe_merges(words, max(0, vocab_size - len(vocab)))
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def learn_bpe_merges(word_counts: dict[str, int], max_merges: int) -> list[tuple[str, str]]:
    """Classic BPE (Sennrich et al.): repeatedly merge the most frequent adjacent pair (ties: smallest pair),
    words ending in ``</w>``, until ``max_merges`` merges or no pair is left."""
    words = {tuple(w[:-1]) + (w[-1] + "</w>",): n for w, n in word_counts.items() if w}
    merges: list[tuple[str, str]] = []
    while len(merges) < max_merges:
        pairs: dict[tuple[str, str], int] = {}
        for symbols, n in words.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] = pairs.get(pair, 0) + n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged = {}
        for symbols, n in words.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + n
        words = merged
    return merges


def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    return tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
