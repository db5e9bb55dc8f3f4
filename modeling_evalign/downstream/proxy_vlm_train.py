"""Training and evaluation of the proxy VLM on cached tower features (resumable, deterministic per seed).

The vision towers are frozen, so their features of every rendered frame are computed once
(:func:`.proxy_vlm_data.tower_tokens`) and the projector + decoder train on them: a question's visual tokens go
through the model's own ``multi_modal_projector`` and are scattered at the ``<video>``/``<image>`` placeholders of
its prompt, exactly as ``VideoLlavaModel.forward`` does with pixel values (video: ``frames x (patches + CLS)``
tokens, image: the patches, CLS dropped). The loss is next-token cross-entropy on the answer and its eos.

Determinism: the batch of step ``k`` (questions, image/video path, noise) comes from a generator seeded with
``(seed, k)``, so a run resumed from the checkpoint of step ``k`` continues exactly as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..utils.io_utils import atomic_open
from ..utils.progress import progress_bar
from .prompts import encode_answer, encode_prompt
from .proxy_vlm_data import Window
from .questions import QUESTIONS

CHECKPOINT = "checkpoint.pt"


def vlm_config(tower_config, tokenizer, hidden_size: int, layers: int, intermediate_size: int, heads: int,
               num_frames: int):
    """A ``VideoLlavaConfig`` on the tower's vision config with a small LLaMA decoder; the visual sequence lengths
    come from the tower (patches per image; frames x (patches + CLS) per video)."""
    from transformers import LlamaConfig, VideoLlavaConfig

    patches = (tower_config.image_size // tower_config.patch_size) ** 2
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    return VideoLlavaConfig(
        vision_config=tower_config.to_dict(), text_config=text.to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-2, vision_feature_select_strategy="default",
        image_seq_length=patches, video_seq_length=num_frames * (patches + 1),
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )


def new_vlm(config, tower_state: dict[str, torch.Tensor], seed: int):
    """A fresh ``VideoLlavaForConditionalGeneration`` (seeded init) whose image and video towers hold the tower's
    weights, frozen."""
    from transformers import VideoLlavaForConditionalGeneration

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = VideoLlavaForConditionalGeneration(config)
    for tower in (model.model.image_tower, model.model.video_tower):
        tower.load_state_dict(tower_state)
        tower.requires_grad_(False)
    return model


class PromptCache:
    """Prompt ids per (question type, modality) and answer ids per answer text, encoded once."""

    def __init__(self, tokenizer, config):
        self.tokenizer = tokenizer
        self.n = {"video": config.video_seq_length, "image": config.image_seq_length}
        self.token = {"video": config.video_token_index, "image": config.image_token_index}
        self._prompts: dict[tuple[str, str], torch.Tensor] = {}
        self._answers: dict[str, list[int]] = {}

    def prompt(self, qtype: str, modality: str) -> torch.Tensor:
        key = (qtype, modality)
        if key not in self._prompts:
            self._prompts[key] = encode_prompt(self.tokenizer, QUESTIONS[qtype], modality, self.n[modality])[0]
        return self._prompts[key]

    def answer(self, text: str) -> list[int]:
        if text not in self._answers:
            self._answers[text] = encode_answer(self.tokenizer, text)
        return self._answers[text]


def embed_visual(model, input_ids: torch.Tensor, visual: torch.Tensor, token_id: int) -> torch.Tensor:
    """Token embeddings of ``input_ids [B, L]`` with ``visual [B, N, D]`` tower-space tokens projected by the model's
    projector and written at the ``token_id`` placeholders (N of them per row)."""
    embeds = model.get_input_embeddings()(input_ids)
    projected = model.model.multi_modal_projector(visual.to(embeds.dtype))
    mask = (input_ids == token_id).unsqueeze(-1).expand_as(embeds)
    return embeds.masked_scatter(mask, projected.reshape(-1, embeds.shape[-1]))


def visual_tokens(features: torch.Tensor, windows: Sequence[Window], modality: str) -> torch.Tensor:
    """Tower tokens of windows from ``features [S, T, 1 + P, D]``: video = the window's frames, CLS kept, flattened
    frame-major ``[B, F * (1 + P), D]``; image = the last frame's patches ``[B, P, D]``."""
    if modality == "video":
        seq = torch.tensor([w.seq for w in windows])[:, None]
        idx = torch.tensor([w.frames for w in windows])
        return features[seq, idx].flatten(1, 2).float()
    return features[torch.tensor([w.seq for w in windows]), torch.tensor([w.frames[-1] for w in windows])][:, 1:].float()


def batch_inputs(model, prompts: PromptCache, features, windows, modality, answers=None, noise=None):
    """``inputs_embeds, attention_mask, labels`` for teacher forcing on (prompt + answer), right-padded."""
    visual = visual_tokens(features, windows, modality)
    if noise is not None:
        visual = noise(visual)
    answers = answers if answers is not None else [prompts.answer(w.answer) for w in windows]
    rows = [torch.cat([prompts.prompt(w.qtype, modality), torch.tensor(a)]) for w, a in zip(windows, answers)]
    length = max(len(r) for r in rows)
    pad = prompts.tokenizer.pad_token_id
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    labels = torch.full((len(rows), length), -100, dtype=torch.long)
    for i, (r, a) in enumerate(zip(rows, answers)):
        ids[i, : len(r)] = r
        labels[i, len(r) - len(a) : len(r)] = torch.tensor(a)
    embeds = embed_visual(model, ids, visual, prompts.token[modality])
    return embeds, (ids != pad).long(), labels


def lm_loss(model, embeds, mask, labels) -> torch.Tensor:
    logits = model(inputs_embeds=embeds, attention_mask=mask).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)


def make_noise(cfg, feature_std: torch.Tensor, g: torch.Generator):
    """Training augmentation of tower tokens: gaussian noise (``feature_noise`` x the per-channel std) and token
    dropout (a token replaced by zeros with probability ``token_dropout``), so imperfect aligned tokens still read."""
    def apply(x: torch.Tensor) -> torch.Tensor:
        if cfg.feature_noise > 0:
            x = x + torch.randn(x.shape, generator=g) * (cfg.feature_noise * feature_std)
        if cfg.token_dropout > 0:
            keep = torch.rand(x.shape[:-1], generator=g) >= cfg.token_dropout
            x = x * keep.unsqueeze(-1)
        return x
    return apply


def _save(path: Path, model, optimizer, scheduler, step: int) -> None:
    trainable = {k: v for k, v in model.state_dict().items() if "_tower." not in k}
    with atomic_open(path) as f:
        torch.save({"model": trainable, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "step": step}, f)


def train_vlm(model, cfg, prompts: PromptCache, features: torch.Tensor, windows: list[Window], work_dir: Path, *,
              steps: int, learning_rate: float, name: str, image_fraction: float, teacher=None, progress=True,
              _stop_after_steps: int | None = None):
    """Train ``model``'s projector + decoder for ``steps`` steps (resuming from ``work_dir/<name>-checkpoint.pt``).

    With ``teacher`` (the target) the loss is the KL divergence to the teacher's next-token distribution on the
    teacher-forced ground-truth answer (distillation), plus the answer's cross-entropy."""
    from ..training.schedule import make_optimizer, make_schedule

    work_dir.mkdir(parents=True, exist_ok=True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, learning_rate, cfg.weight_decay)
    scheduler = make_schedule(optimizer, cfg.warmup_steps, steps)
    ckpt = work_dir / f"{name}-{CHECKPOINT}"
    start = 0
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=True)
        model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = int(state["step"])
    feature_std = features[:, :: max(1, features.shape[1] // 20)].float().flatten(0, -2).std(0)
    model.train()
    bar = progress_bar(total=steps, initial=start, desc=f"pretrain proxy VLM ({name})", unit="step",
                       disable=not progress)
    for ran, step in enumerate(range(start, steps), start=1):
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step + (0 if teacher is None else 500_009))
        idx = torch.randint(len(windows), (cfg.batch_size,), generator=g).tolist()
        n_image = int(round(image_fraction * cfg.batch_size))
        noise = make_noise(cfg, feature_std, g)
        loss = torch.zeros(())
        for modality, part in (("image", idx[:n_image]), ("video", idx[n_image:])):
            if not part:
                continue
            batch = [windows[i] for i in part]
            embeds, mask, labels = batch_inputs(model, prompts, features, batch, modality, noise=noise)
            if teacher is None:
                part_loss = lm_loss(model, embeds, mask, labels)
            else:
                part_loss = _distill_loss(model, teacher, prompts, features, batch, modality, embeds, mask, labels)
            loss = loss + part_loss * (len(part) / len(idx))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        done = step + 1
        if done % cfg.checkpoint_every == 0 or done == steps:
            _save(ckpt, model, optimizer, scheduler, done)
            if _stop_after_steps is not None and ran >= _stop_after_steps and done < steps:
                bar.close()
                raise RuntimeError(f"test hook: stopped after step {done}")
    bar.close()
    return model.eval()


def _distill_loss(model, teacher, prompts, features, batch, modality, embeds, mask, labels):
    with torch.no_grad():
        t_embeds, _, _ = batch_inputs(teacher, prompts, features, batch, modality)
        t_logits = teacher(inputs_embeds=t_embeds, attention_mask=mask).logits[:, :-1]
    logits = model(inputs_embeds=embeds, attention_mask=mask).logits[:, :-1]
    keep = labels[:, 1:] != -100
    kl = F.kl_div(F.log_softmax(logits[keep], -1), F.log_softmax(t_logits[keep], -1), log_target=True,
                  reduction="batchmean")
    ce = F.cross_entropy(logits[keep], labels[:, 1:][keep])
    return kl + 0.5 * ce


@torch.inference_mode()
def greedy(model, embeds: torch.Tensor, max_new_tokens: int, eos_token_id: int) -> list[list[int]]:
    """Batched greedy decoding from same-length prompt embeddings ``[B, L, H]`` with a KV cache; each answer up to
    and including its eos."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config.get_text_config())
    out = model(inputs_embeds=embeds, cache=cache, use_cache=True)
    tokens = []
    done = torch.zeros(len(embeds), dtype=torch.bool)
    for _ in range(max_new_tokens):
        nxt = out.logits[:, -1].argmax(-1)
        tokens.append(nxt)
        done |= nxt == eos_token_id
        if bool(done.all()):
            break
        out = model(inputs_embeds=model.get_input_embeddings()(nxt[:, None]), cache=out.cache,
                    use_cache=True)
    ids = torch.stack(tokens, 1).tolist()
    return [row[: row.index(eos_token_id) + 1] if eos_token_id in row else row for row in ids]


def answer_windows(model, prompts: PromptCache, features, windows: list[Window], modality: str,
                   max_new_tokens: int, batch: int = 64) -> list[list[int]]:
    """Greedy answers to every window's question (grouped by question type so prompts share a length)."""
    out: list[list[int] | None] = [None] * len(windows)
    by_type: dict[str, list[int]] = {}
    for i, w in enumerate(windows):
        by_type.setdefault(w.qtype, []).append(i)
    for qtype, idx in by_type.items():
        for j in range(0, len(idx), batch):
            part = idx[j : j + batch]
            ids = prompts.prompt(qtype, modality).expand(len(part), -1)
            embeds = embed_visual(model, ids, visual_tokens(features, [windows[i] for i in part], modality),
                                  prompts.token[modality])
            for i, ans in zip(part, greedy(model, embeds, max_new_tokens, prompts.tokenizer.eos_token_id)):
                out[i] = ans
    return out


def accuracy_by_type(windows: list[Window], predicted: list[list[int]], prompts: PromptCache) -> dict[str, Any]:
    """Exact-match accuracy of greedy answers per question type and overall, with counts."""
    hits: dict[str, list[bool]] = {}
    for w, p in zip(windows, predicted):
        hits.setdefault(w.qtype, []).append(p == prompts.answer(w.answer))
    out: dict[str, Any] = {q: sum(h) / len(h) for q, h in hits.items()}
    out["overall"] = sum(sum(h) for h in hits.values()) / max(1, sum(len(h) for h in hits.values()))
    out["n"] = {q: len(h) for q, h in hits.items()}
    return out
