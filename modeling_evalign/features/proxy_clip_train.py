"""Image-text contrastive pretraining of the proxy CLIP (resumable, deterministic per seed) and its held-out
evaluation: zero-shot classification with class prompts and image<->caption retrieval, chance levels beside.

Determinism: the batch of step ``k`` (frame indices, caption templates, augmentation draws) comes from a
generator seeded with ``(seed, k)``, never from a running RNG stream, so a run resumed from the checkpoint of
step ``k`` continues exactly as an uninterrupted one. The checkpoint (model, optimiser, scheduler, step) is
written atomically every ``checkpoint_every`` steps to ``work_dir/checkpoint.pt``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..training.schedule import make_optimizer, make_schedule
from ..utils.io_utils import atomic_open
from ..utils.progress import progress_bar
from .proxy_clip_data import (
    TEMPLATES,
    ZERO_SHOT_TEMPLATE,
    FrameSet,
    augment,
    caption,
    eval_pixels,
    render_frames,
    tokenize,
)

CHECKPOINT = "checkpoint.pt"


def clip_config(cfg, tokenizer):
    """The ``CLIPConfig`` of ``cfg`` (a ``ProxyClipConfig``) with the tokenizer's special-token ids."""
    from transformers import CLIPConfig

    common = dict(
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_attention_heads=cfg.num_heads,
        projection_dim=cfg.projection_dim,
    )
    text = dict(
        vocab_size=len(tokenizer),
        max_position_embeddings=cfg.max_text_length,
        num_hidden_layers=cfg.text_layers,
        # the text tower pools at the first EOS: the config must carry the tokenizer's ids
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **common,
    )
    vision = dict(image_size=cfg.image_size, patch_size=cfg.patch_size, num_hidden_layers=cfg.vision_layers, **common)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=cfg.projection_dim)


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def _batch(cfg, frames: FrameSet, labels: list[str], tokenizer, step: int):
    g = _step_generator(cfg.seed, step)
    idx = torch.randperm(len(frames), generator=g)[: cfg.batch_size]
    pixels, flipped = augment(frames.images[idx], cfg.image_size, g, scale=tuple(cfg.crop_scale), jitter=cfg.jitter)
    templates = torch.randint(len(TEMPLATES), (len(idx),), generator=g).tolist()
    texts = [
        caption(labels[frames.labels[i]], frames.parts[i], TEMPLATES[t], bool(f))
        for i, t, f in zip(idx.tolist(), templates, flipped.tolist())
    ]
    return pixels, tokenize(tokenizer, texts, cfg.max_text_length)


def _save_checkpoint(path: Path, model, optimizer, scheduler, step: int) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "step": step}
    with atomic_open(path) as f:
        torch.save(state, f)


def train_proxy_clip(
    cfg,
    tokenizer,
    labels: list[str],
    work_dir: str | Path,
    frames: FrameSet | None = None,
    progress: bool = True,
    _stop_after_steps: int | None = None,
):
    """Train a fresh ``CLIPModel`` for ``cfg.steps`` steps (resuming from ``work_dir/checkpoint.pt``).

    ``_stop_after_steps`` is a test hook: raise (as a kill would) once that many steps ran in this call,
    right after a checkpoint.
    """
    from transformers import CLIPModel

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    if frames is None:
        frames = render_frames(cfg.photos, "train", cfg.train_sequences_per_photo, cfg.frames_per_sequence,
                               tuple(cfg.render_size), cfg.seed)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        model = CLIPModel(clip_config(cfg, tokenizer))
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    # the optimizer and warm-up + cosine schedule of every evalign run (training.schedule)
    optimizer = make_optimizer(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        cfg.learning_rate, cfg.weight_decay, betas=(0.9, 0.98), eps=1e-6,
    )
    scheduler = make_schedule(optimizer, cfg.warmup_steps, cfg.steps)
    start = 0
    ckpt = work_dir / CHECKPOINT
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = int(state["step"])
    model.train()
    bar = progress_bar(total=cfg.steps, initial=start, desc="pretrain proxy CLIP", unit="step", disable=not progress)
    for ran, step in enumerate(range(start, cfg.steps), start=1):
        pixels, text = _batch(cfg, frames, labels, tokenizer, step)
        out = model(pixel_values=pixels, input_ids=text["input_ids"], attention_mask=text["attention_mask"],
                    return_loss=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():  # CLIP's clamp of the learnable temperature (logit scale <= ln 100)
            model.logit_scale.clamp_(0, math.log(100))
        bar.update(1)
        bar.set_postfix(loss=f"{out.loss.item():.3f}", refresh=False)
        done = step + 1
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            _save_checkpoint(ckpt, model, optimizer, scheduler, done)
            if _stop_after_steps is not None and ran >= _stop_after_steps and done < cfg.steps:
                bar.close()
                raise RuntimeError(f"test hook: stopped after step {done}")
    bar.close()
    return model.eval()


@torch.inference_mode()
def _embed_images(model, frames: FrameSet, image_size: int, batch: int = 256) -> torch.Tensor:
    out = [model.get_image_features(pixel_values=eval_pixels(frames.images[i : i + batch], image_size)).pooler_output
           for i in range(0, len(frames), batch)]
    return torch.nn.functional.normalize(torch.cat(out).float(), dim=-1)


@torch.inference_mode()
def _embed_texts(model, tokenizer, texts: list[str], max_length: int) -> torch.Tensor:
    tok = tokenize(tokenizer, texts, max_length)
    feats = model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).pooler_output
    return torch.nn.functional.normalize(feats.float(), dim=-1)


def evaluate_proxy_clip(model, tokenizer, frames: FrameSet, labels: list[str], image_size: int,
                        max_length: int) -> dict[str, Any]:
    """Held-out metrics (fractions) with their chance levels.

    * ``zero_shot/accuracy``: argmax over the class prompts ``"a photo of the {label}"``; chance ``1/classes``.
    * image->text (``i2t/R@k``): rank the distinct captions of the held-out frames; a hit is the frame's own
      caption (template 0, unflipped); chance ``k/captions``.
    * text->image (``t2i/R@k``): each distinct caption ranks the frames; a hit is any frame with that caption;
      chance: the expected hit rate of a random ranking, averaged over captions.
    """
    model.eval()
    image = _embed_images(model, frames, image_size)
    prompts = [ZERO_SHOT_TEMPLATE.format(label) for label in labels]
    class_text = _embed_texts(model, tokenizer, prompts, max_length)
    predicted = (image @ class_text.T).argmax(dim=1)
    own = [caption(labels[c], p) for c, p in zip(frames.labels.tolist(), frames.parts)]
    distinct = sorted(set(own))
    which = torch.tensor([distinct.index(c) for c in own])
    text = _embed_texts(model, tokenizer, distinct, max_length)
    sim = image @ text.T  # [frames, captions]
    metrics: dict[str, Any] = {
        "zero_shot/accuracy": float((predicted == frames.labels).float().mean()),
        "zero_shot/chance": 1.0 / len(labels),
        "num_test_frames": len(frames),
        "num_test_sequences": len(set(frames.sequences)),
        "num_classes": len(labels),
        "num_captions": len(distinct),
    }
    n = len(frames)
    counts = torch.bincount(which, minlength=len(distinct)).double()
    for k in (1, 5):
        top_t = sim.topk(min(k, len(distinct)), dim=1).indices
        metrics[f"i2t/R@{k}"] = float((top_t == which[:, None]).any(dim=1).float().mean())
        metrics[f"i2t/R@{k}/chance"] = min(k, len(distinct)) / len(distinct)
        top_i = sim.T.topk(min(k, n), dim=1).indices  # [captions, k]
        metrics[f"t2i/R@{k}"] = float((which[top_i] == torch.arange(len(distinct))[:, None]).any(dim=1).float().mean())
        # P(at least one of k random frames carries the caption), without replacement
        miss = torch.ones(len(distinct), dtype=torch.float64)
        for j in range(min(k, n)):
            miss *= (n - counts - j).clamp(min=0) / (n - j)
        metrics[f"t2i/R@{k}/chance"] = float((1 - miss).mean())
    return metrics
