"""Downstream evaluation: does an RGB-trained VLM read aligned event tokens? (the main job's downstream stage)

Per duration: the video-layout features (:mod:`.features`), every strategy trained on them through the package's
per-token paths (train split only), then the VLM answers every question on the held-out test windows under each
condition:

* ``rgb_video``: the VLM on its own RGB video tokens (the ceiling; the reference of agreement and alpha);
* ``rgb_frame``: the image path on one RGB frame at the window's end (the brief's single-RGB LLaVA baseline;
  one frame cannot show the motion);
* ``unaligned``: the raw event tokens through the VLM's projector;
* each trained strategy's aligned tokens (``closed_form``, ``lightweight``, ``contrastive``, ``triple_modal``,
  ``contrastive_image``).

A row: ``accuracy`` (exact answer match, micro-averaged over the asked (window, question) pairs; a question
whose answer is ambiguous in a window is not asked there), ``accuracy_by_type``, ``agreement`` (same answer as
``rgb_video`` on the asked pairs), ``alpha`` (exact greedy speculative acceptance, pooled accepted / drafted
tokens over the asked pairs: draft = the target VLM reading the condition's tokens, target = the VLM on RGB
video) and ``n`` (test windows evaluated). A number with nothing to count (no window asks the question) is None. Answers are compared as lower-case word/punctuation sequences.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import numpy as np
import torch

REFERENCES = ("rgb_video", "rgb_frame", "unaligned")


@dataclass
class Condition:
    """Tower-space tokens of the test windows read by one condition: ``video`` ``[N, F, T, D]`` or
    ``image`` ``[N, P, D]``."""

    name: str
    kind: str
    features: torch.Tensor
    note: str = ""


@dataclass
class ConditionAnswers:
    tokens: dict[str, list[list[int]]] = field(default_factory=dict)  # question type -> per-window token ids
    texts: dict[str, list[str]] = field(default_factory=dict)
    # (question type, window) -> (accepted, drafted) tokens of the exact trace against the rgb_video answers
    acceptance: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)


def normalize_answer(text: str | None) -> str:
    """Lower-case words and punctuation joined by single spaces (so tokenizer spacing never matters)."""
    return " ".join(re.findall(r"\w+|[^\w\s]", (text or "").lower()))


def _prompt_ids(tokenizer, question: str, kind: str, num_tokens: int) -> torch.Tensor:
    from .prompts import encode_prompt

    return encode_prompt(tokenizer, question, kind, num_tokens)


def _embeds(model, ids: torch.Tensor, cond: Condition, rows: slice) -> torch.Tensor:
    from .visual import visual_inputs_embeds

    feats = cond.features[rows].float()
    ids = ids.expand(feats.shape[0], -1)
    if cond.kind == "video":
        return visual_inputs_embeds(model, ids, video_features=feats)
    return visual_inputs_embeds(model, ids, image_features=feats)


def num_visual_tokens(cond: Condition) -> int:
    return int(np.prod(cond.features.shape[1:-1]))


@torch.inference_mode()
def answer_condition(model, tokenizer, cond: Condition, question_types, reference: ConditionAnswers | None,
                     max_new_tokens: int, gamma: int, batch_size: int = 64) -> ConditionAnswers:
    """Greedy answers of ``model`` to every question type on ``cond``'s tokens (batched: a question's prompts
    have one length, no padding) and, given the ``rgb_video`` answers as ``reference``, the exact acceptance of
    those answers with this condition as the draft."""
    from .generation import greedy_answers, trace_acceptance
    from .prompts import decode_answer
    from .questions import QUESTIONS

    eos = tokenizer.eos_token_id
    out = ConditionAnswers()
    n = cond.features.shape[0]
    for qtype in question_types:
        ids = _prompt_ids(tokenizer, QUESTIONS[qtype], cond.kind, num_visual_tokens(cond))
        tokens: list[list[int]] = []
        for lo in range(0, n, batch_size):
            rows = slice(lo, min(n, lo + batch_size))
            embeds = _embeds(model, ids, cond, rows)
            tokens += [list(map(int, t)) for t in greedy_answers(model, embeds, max_new_tokens, eos)]
            if reference is not None:
                traces = trace_acceptance(model, embeds, reference.tokens[qtype][rows], gamma, eos,
                                          max_new_tokens=max_new_tokens)
                for i, res in zip(range(rows.start, rows.stop), traces):
                    out.acceptance[(qtype, i)] = (sum(res.accepted_per_round), sum(res.drafted_per_round))
        out.tokens[qtype] = tokens
        out.texts[qtype] = [decode_answer(tokenizer, t) for t in tokens]
    return out


def score(name: str, duration: str, answers: ConditionAnswers, truth: list[dict], reference: ConditionAnswers,
          n: int) -> dict:
    """One row from the stored answers (see the module docstring for each number)."""
    by_type, hits, agree, total, accepted, drafted = {}, 0, 0, 0, 0, 0
    for qtype, texts in answers.texts.items():
        asked = [i for i, t in enumerate(truth) if t.get(qtype) is not None]
        ok = [normalize_answer(texts[i]) == normalize_answer(truth[i][qtype]) for i in asked]
        by_type[qtype] = float(np.mean(ok)) if asked else None
        hits += sum(ok)
        total += len(asked)
        agree += sum(normalize_answer(texts[i]) == normalize_answer(reference.texts[qtype][i]) for i in asked)
        for i in asked:
            a, d = answers.acceptance.get((qtype, i), (0, 0))
            accepted, drafted = accepted + a, drafted + d
    return {"duration": duration, "condition": name, "accuracy": hits / total if total else None,
            "accuracy_by_type": by_type, "agreement": agree / total if total else None,
            "alpha": accepted / drafted if drafted else None, "n": n}


def subsample(n: int, limit: int) -> np.ndarray:
    """Evenly spaced window indices (all when ``limit`` is 0 or >= n)."""
    if limit <= 0 or limit >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


def evaluate_conditions(model, tokenizer, conditions: list[Condition], truth: list[dict], duration: str,
                        question_types=None, max_new_tokens: int = 40, gamma: int = 4, log=print,
                        ) -> tuple[list[dict], dict[str, ConditionAnswers]]:
    """Rows of every condition (``rgb_video`` first: the reference of agreement and alpha) and their answers."""
    from .questions import QUESTION_TYPES

    types = tuple(question_types or QUESTION_TYPES)
    by_name = {c.name: c for c in conditions}
    if "rgb_video" not in by_name:
        raise ValueError(f"conditions {list(by_name)}: expected an 'rgb_video' condition (the reference)")
    n = by_name["rgb_video"].features.shape[0]
    bad = {c.name: c.features.shape[0] for c in conditions if c.features.shape[0] != n or len(truth) != n}
    if bad:
        raise ValueError(f"conditions hold {bad} windows and the answers {len(truth)}: expected {n} each")
    answers: dict[str, ConditionAnswers] = {}
    started = time.perf_counter()
    ref = answer_condition(model, tokenizer, by_name["rgb_video"], types, None, max_new_tokens, gamma)
    # the reference against itself: the exact trace, alpha 1 by construction (a check of the loop)
    answers["rgb_video"] = answer_condition(model, tokenizer, by_name["rgb_video"], types, ref, max_new_tokens, gamma)
    for c in conditions:
        if c.name != "rgb_video":
            answers[c.name] = answer_condition(model, tokenizer, c, types, ref, max_new_tokens, gamma)
    rows = [score(c.name, duration, answers[c.name], truth, ref, n) for c in conditions]
    log(f"    [{duration}] {len(conditions)} conditions x {len(types)} questions on {n} windows: "
        f"{time.perf_counter() - started:.1f} s")
    return rows, answers


def best_strategy(rows: list[dict]) -> str | None:
    """The trained strategy (any condition but the references) with the highest accuracy (ties: the higher
    alpha)."""
    trained = [r for r in rows if r["condition"] not in REFERENCES and r["accuracy"] is not None]
    if not trained:
        return None
    return max(trained, key=lambda r: (r["accuracy"], r["alpha"] or 0.0))["condition"]


@torch.inference_mode()
def speculative_entry(target, draft, tokenizer, video: Condition, aligned: Condition, truth: list[dict],
                      gamma: int | None, max_new_tokens: int, windows: int = 8, repeats: int = 3) -> dict:
    """The small draft reading ``aligned`` tokens vs the target on RGB video, caption question (the long answer),
    wall clock in one run (:func:`.generation.measure_speedup`; ``gamma=None`` lets it pick the gamma with the best
    predicted speedup from the exact per-round counts)."""
    from .generation import measure_speedup
    from .questions import QUESTIONS

    asked = [i for i, t in enumerate(truth) if t.get("caption") is not None] or list(range(len(truth)))
    rows = np.asarray(asked)[subsample(len(asked), windows)]
    pick = torch.as_tensor(rows)
    v = Condition(video.name, video.kind, video.features[pick])
    a = Condition(aligned.name, aligned.kind, aligned.features[pick])
    ids = _prompt_ids(tokenizer, QUESTIONS["caption"], "video", num_visual_tokens(v))
    result = measure_speedup(target, _embeds(target, ids, v, slice(None)), draft, _embeds(draft, ids, a, slice(None)),
                             gamma, max_new_tokens, tokenizer.eos_token_id, repeats=repeats)
    values = result.to_dict() if hasattr(result, "to_dict") else dict(vars(result))
    entry = {k: v for k, v in values.items() if isinstance(v, (int, float, bool, str))}
    entry.update(condition=aligned.name, question="caption", n=len(rows))
    return entry
