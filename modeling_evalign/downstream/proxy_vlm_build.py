"""The proxy VLM build: render sequences, cache tower features once, train the target, distil the draft, evaluate.

Held-out evaluation: windows of each ``eval_durations`` every ``max(duration, eval_stride)`` s over the held-out sequences (camera paths from
another seed stream); accuracy = the greedy answer equals the ground truth exactly (all its tokens and eos).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..events.scenes import PHOTOS
from ..utils.io_utils import atomic_open
from .prompts import build_tokenizer
from .proxy_vlm_data import grid_windows, render_sequences, sample_windows, tower_tokens
from .proxy_vlm_train import (
    PromptCache,
    accuracy_by_type,
    answer_windows,
    batch_inputs,
    new_vlm,
    train_vlm,
    vlm_config,
)
from .questions import all_texts, answer_choices

FEATURES = "features.pt"
_VISION_ROOTS = ("embeddings", "pre_layrnorm", "encoder", "post_layernorm")


@dataclass
class BuiltVlm:
    target: Any
    draft: Any
    tokenizer: Any
    processor: Any
    metrics: dict[str, Any]
    info: dict[str, Any]


def load_tower(tower: Path):
    """The tower's ``CLIPVisionConfig`` and vision weights (the ``vision_model.*`` tensors of a CLIPModel or
    CLIPVisionModel directory), read without instantiating the text tower."""
    from safetensors.torch import load_file
    from transformers import CLIPVisionConfig

    vision_config = CLIPVisionConfig.from_pretrained(tower)
    weights = load_file(tower / "model.safetensors")
    # CLIPModel files prefix the vision weights with "vision_model."; transformers 5's CLIPVisionModel (the class
    # VideoLlava's towers are) holds them unprefixed
    state = {k.removeprefix("vision_model."): v for k, v in weights.items() if k.startswith("vision_model.")}
    state = state or {k: v for k, v in weights.items() if k.split(".")[0] in _VISION_ROOTS}
    if not state:
        raise ValueError(f"tower {tower}/model.safetensors holds no CLIP vision weights (vision_model.* or "
                         f"{'/'.join(_VISION_ROOTS)}.*)")
    return vision_config, state


def _features(cfg, vision_config, state, work: Path, progress: bool):
    """Rendered sequences of both splits and their tower tokens, cached in ``work/features.pt``."""
    from transformers import CLIPVisionModel

    seqs = {split: render_sequences(cfg.photos, split, n, cfg.seconds, cfg.frame_rate_hz, tuple(cfg.render_size),
                                    cfg.seed)
            for split, n in (("train", cfg.train_sequences_per_photo), ("test", cfg.test_sequences_per_photo))}
    path = work / FEATURES
    if path.is_file():
        feats = torch.load(path, weights_only=True)
    else:
        tower = CLIPVisionModel(vision_config)
        tower.load_state_dict(state)
        tower.eval()
        feats = {split: tower_tokens(tower, s.frames, vision_config.image_size) for split, s in seqs.items()}
        work.mkdir(parents=True, exist_ok=True)
        with atomic_open(path) as f:
            torch.save(feats, f)
    return seqs, feats


def _processor(tower: Path):
    """The tower's ``CLIPImageProcessor`` (``None`` where the tower has none), saved beside each model.

    Not a ``VideoLlavaProcessor``: that needs a video processor, and transformers' video processors need
    torchvision, which this environment does not install (the prompts expand their placeholders themselves)."""
    from transformers import CLIPImageProcessor

    try:
        return CLIPImageProcessor.from_pretrained(tower)
    except OSError:
        return None


def build_models(cfg, tower: Path, work: Path, progress: bool = True, _stop_after_steps: int | None = None) -> BuiltVlm:
    torch.manual_seed(cfg.seed)
    labels = [PHOTOS[p] for p in cfg.photos]
    tokenizer = build_tokenizer(all_texts(labels))
    vision_config, state = load_tower(tower)
    clock = _Clock()
    seqs, feats = _features(cfg, vision_config, state, work, progress)
    clock.lap("data")
    train_windows = sample_windows(seqs["train"], cfg.train_windows, cfg.durations, cfg.seed, cfg.num_frames)

    config = vlm_config(vision_config, tokenizer, cfg.hidden_size, cfg.layers, cfg.intermediate_size, cfg.heads,
                        cfg.num_frames)
    prompts = PromptCache(tokenizer, config)
    target = new_vlm(config, state, cfg.seed)
    target = train_vlm(target, cfg, prompts, feats["train"], train_windows, work, steps=cfg.steps,
                       learning_rate=cfg.learning_rate, name="target", image_fraction=cfg.image_fraction,
                       progress=progress, _stop_after_steps=_stop_after_steps)
    target.requires_grad_(False)
    clock.lap("target")

    draft_config = vlm_config(vision_config, tokenizer, cfg.draft_hidden_size, cfg.draft_layers,
                              cfg.draft_intermediate_size, cfg.draft_heads, cfg.num_frames)
    draft = new_vlm(draft_config, state, cfg.seed + 1)
    draft = train_vlm(draft, cfg, prompts, feats["train"], train_windows, work, steps=cfg.draft_steps,
                      learning_rate=cfg.draft_learning_rate, name="draft", image_fraction=0.0, teacher=target,
                      progress=progress, _stop_after_steps=_stop_after_steps)

    clock.lap("draft")
    metrics = evaluate_vlms(cfg, target, draft, prompts, seqs["test"], feats["test"], labels)
    clock.lap("evaluate")
    info = {
        "num_parameters": {name: sum(p.numel() for n, p in m.named_parameters() if "_tower." not in n)
                           for name, m in (("target", target), ("draft", draft))},
        "train_questions": len(train_windows),
        "train_sequences": len(seqs["train"].labels),
        "test_sequences": len(seqs["test"].labels),
        "visual_tokens": {"image": config.image_seq_length, "video": config.video_seq_length},
        "phase_wall_s": clock.laps,  # this run's phases (a resumed build counts only what it ran)
    }
    processor = _processor(tower)
    info["image_processor"] = processor is not None
    return BuiltVlm(target, draft, tokenizer, processor, metrics, info)


class _Clock:
    def __init__(self):
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._t, 1)
        self._t = now


@torch.inference_mode()
def evaluate_vlms(cfg, target, draft, prompts: PromptCache, seqs, feats, labels) -> dict[str, Any]:
    """Per eval duration: target accuracy by type on video and on one frame; draft accuracy on video, its whole-
    answer agreement with the target and its teacher-forced token agreement on the target's answers; the
    majority-answer share per type."""
    choices = answer_choices(labels)
    metrics: dict[str, Any] = {"chance": {q: 1 / len(c) for q, c in choices.items()}, "target": {}, "draft": {}}
    for duration in cfg.eval_durations:
        key = f"{duration:g}s"
        windows = grid_windows(seqs, duration, cfg.num_frames, stride=max(duration, cfg.eval_stride))
        video = answer_windows(target, prompts, feats, windows, "video", cfg.max_new_tokens)
        image = answer_windows(target, prompts, feats, windows, "image", cfg.max_new_tokens)
        drafted = answer_windows(draft, prompts, feats, windows, "video", cfg.max_new_tokens)
        metrics.setdefault("majority", {})[key] = _majority(windows)
        metrics["target"][key] = {"video": accuracy_by_type(windows, video, prompts),
                                  "image": accuracy_by_type(windows, image, prompts)}
        same = sum(a == b for a, b in zip(video, drafted)) / len(windows)
        metrics["draft"][key] = {"video": accuracy_by_type(windows, drafted, prompts), "agreement": same,
                                 "token_agreement": _token_agreement(draft, prompts, feats, windows, video)}
    return metrics


def _majority(windows) -> dict[str, float]:
    """Per question type, the share of its most frequent answer among these windows (what a constant answer
    scores: the honest baseline where the answers are unbalanced)."""
    from collections import Counter

    counts: dict[str, Counter] = {}
    for w in windows:
        counts.setdefault(w.qtype, Counter())[w.answer] += 1
    return {q: c.most_common(1)[0][1] / sum(c.values()) for q, c in counts.items()}


def _token_agreement(draft, prompts, feats, windows, target_answers, batch: int = 64) -> float:
    """Fraction of the target's greedy answer tokens the draft predicts greedily with the target's prefix
    (teacher-forced): the per-token acceptance of greedy speculative decoding."""
    hit = total = 0
    for i in range(0, len(windows), batch):
        part, answers = windows[i : i + batch], target_answers[i : i + batch]
        embeds, mask, labels = batch_inputs(draft, prompts, feats, part, "video", answers=answers)
        pred = draft(inputs_embeds=embeds, attention_mask=mask).logits[:, :-1].argmax(-1)
        keep = labels[:, 1:] != -100
        hit += int((pred[keep] == labels[:, 1:][keep]).sum())
        total += int(keep.sum())
    return hit / max(1, total)
