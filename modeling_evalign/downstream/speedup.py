"""Measured speedup of greedy speculative decoding with a draft that reads ITS OWN visual prefix.

:func:`speculative_generate` is a lean exact greedy draft/verify loop over two KV caches (one crop per model
per round, the target verifies the ``k`` drafts and the committed token it has not seen in ONE forward, the
first round's verification doubles as the target's prefill). :func:`measure_speedup` times it against the
target's own cached greedy loop on the same prompts, interleaved, and reports the measured speedup beside
Leviathan et al.'s implied improvement from the measured acceptance and cost ratio.

Why not transformers' assisted generation (``generate(assistant_model=...)``, checked in transformers 5.25):
``AssistedCandidateGenerator`` gives the assistant deep copies of the TARGET's model kwargs (its
``pixel_values``/``mm_encoder_outputs``, attention mask and ``inputs_embeds``), so the draft cannot read its
own (event) visual tokens; worse, the assistant runs with ``is_first_iteration=False``, so
``prepare_inputs_for_generation`` drops ``mm_encoder_outputs``/``pixel_values`` with a cache and the draft
reads the bare placeholder-token embeddings instead of any visual input. A wrapper can re-inject the draft's
own features at its prefill (:func:`assisted_generate` does, for prompts that share the target's token
layout, and stays exact), but every round is a full nested ``generate()`` call whose Python overhead (logits
processors, stopping criteria, cache bookkeeping) costs several one-token steps of a small decoder; the
package's loop is used for the measured numbers and the wrapper is timed beside it in the benchmark.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..evaluation.speculative import AcceptanceResult, walltime_improvement
from .generation import (
    _check_model,
    _eos_list,
    check_budget,
    check_embeds,
    forward_logits,
    greedy_tokens,
    trace_acceptance,
)

__all__ = ["SpeedupResult", "assisted_generate", "measure_speedup", "speculative_generate"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def speculative_generate(
    target: torch.nn.Module,
    target_embeds: torch.Tensor,
    draft: torch.nn.Module,
    draft_embeds: torch.Tensor,
    gamma: int,
    max_new_tokens: int,
    eos_token_id: int | list[int] | None,
    *,
    draft_steps: list[float] | None = None,
) -> AcceptanceResult:
    """Exact greedy speculative decoding of one prompt; the counts equal ``measure_acceptance``'s.

    ``target_embeds [1, L_t, H_t]`` and ``draft_embeds [1, L_d, H_d]`` are each model's own prompt (e.g. RGB video
    tokens for the target, aligned event tokens for the draft). ``draft_steps`` (optional) receives the seconds of
    every one-token draft step (for the cost ratio).
    """
    for model, name in ((target, "target"), (draft, "draft")):
        _check_model(model, name)
    t_prefix = check_embeds(target_embeds, target, "target_embeds")
    d_prefix = check_embeds(draft_embeds, draft, "draft_embeds")
    if t_prefix.shape[0] != 1 or d_prefix.shape[0] != 1:
        raise ValueError("speculative_generate decodes one prompt: expected target_embeds/draft_embeds [1, L, H]")
    if int(gamma) != gamma or gamma < 1:
        raise ValueError(f"gamma={gamma} is invalid: expected an integer >= 1")
    budget, eos = check_budget(max_new_tokens), set(_eos_list(eos_token_id))
    t_dev, d_dev = t_prefix.device, d_prefix.device
    lt, ld = t_prefix.shape[1], d_prefix.shape[1]
    t_cache = d_cache = None
    t_len = d_len = 0  # positions each cache holds
    tokens: list[int] = []
    drafted, accepted_rounds = [], []
    target_calls = draft_calls = 0
    while len(tokens) < budget:
        before = len(tokens)
        k = min(int(gamma), budget - before - 1)
        proposal: list[int] = []
        if k > 0:
            if d_cache is None:
                logits, d_cache = forward_logits(draft, None, 0, inputs_embeds=d_prefix)
                d_len = ld
                proposal.append(int(logits[0, -1].argmax()))
            while len(proposal) < k:
                # committed tokens the draft has not read yet (1 or 2 at a round's start), then its own drafts
                new = (tokens + proposal)[d_len - ld:]
                t0 = time.perf_counter()
                logits, d_cache = forward_logits(draft, d_cache, d_len, input_ids=torch.tensor([new], device=d_dev))
                proposal.append(int(logits[0, -1].argmax()))
                if draft_steps is not None and len(new) == 1:
                    draft_steps.append(time.perf_counter() - t0)
                d_len += len(new)
            draft_calls += k
        if t_cache is None:
            embeds = t_prefix
            if proposal:
                embeds = torch.cat([t_prefix, target.get_input_embeddings()(torch.tensor([proposal], device=t_dev))], 1)
            logits, t_cache = forward_logits(target, None, 0, inputs_embeds=embeds, keep=k + 1)
            t_len = lt + k
        else:
            new = tokens[t_len - lt:] + proposal
            logits, t_cache = forward_logits(
                target, t_cache, t_len, input_ids=torch.tensor([new], device=t_dev), keep=k + 1
            )
            t_len += len(new)
        target_calls += 1
        choice = logits[0].argmax(dim=-1).tolist()
        n = 0
        while n < k and proposal[n] == choice[n]:
            n += 1
        new_tokens = proposal[:n] + [choice[n]]
        finished = False
        for i, tok in enumerate(new_tokens):
            if tok in eos:
                new_tokens, n, finished = new_tokens[: i + 1], min(n, i), True
                break
        tokens += new_tokens
        drafted.append(k)
        accepted_rounds.append(n)
        if finished:
            break
        # caches keep the committed context without its newest token (the target's own choice)
        if t_len > lt + before + n:
            t_cache.crop(lt + before + n - t_len)  # a negative count: tokens to drop
            t_len = lt + before + n
        if d_cache is not None and d_len > ld + before + n:
            d_cache.crop(ld + before + n - d_len)
            d_len = ld + before + n
    return AcceptanceResult(
        tokens=torch.tensor(tokens, dtype=torch.long), gamma=int(gamma), drafted_per_round=drafted,
        accepted_per_round=accepted_rounds, num_target_calls=target_calls, num_draft_calls=draft_calls,
        cost_ratio=0.0, cost_ratio_measured=False,
    )


@dataclass
class SpeedupResult:
    """Wall clock of target-alone greedy vs speculative decoding on the same prompts (one run).

    ``target_ms``/``speculative_ms``: mean over prompts of the per-prompt median over ``repeats`` (prefills
    included: the draft's prefill counts in the speculative time). ``speedup = target_ms / speculative_ms``.
    ``alpha`` = accepted / drafted over all rounds; ``alpha_per_token`` = accepted / (accepted + rejections),
    the per-token probability plugged into Leviathan's formula. ``cost_ratio`` c = median one-token draft step
    / median one-token target step (both cached, measured in these runs). ``implied_speedup`` = (1 - a^(g+1)) /
    ((1 - a)(g c + 1)) at ``alpha_per_token``. ``tokens_identical``: every prompt's speculative output equals
    the target's greedy output in every repeat.
    """

    speedup: float
    tokens_identical: bool
    alpha: float
    alpha_per_token: float
    gamma: int
    gamma_chosen: bool
    cost_ratio: float
    implied_speedup: float
    target_ms: float
    speculative_ms: float
    target_step_ms: float
    draft_step_ms: float
    tokens_per_target_call: float
    mean_new_tokens: float
    num_prompts: int
    repeats: int
    device: str
    predicted_by_gamma: dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["predicted_by_gamma"] = {str(k): v for k, v in self.predicted_by_gamma.items()}
        return out


def _predicted_speedup(traces: list[AcceptanceResult], target_step: float, draft_step: float) -> float:
    """Target-alone steps / (verify calls + draft steps) from exact per-round counts (prefills left out)."""
    base = sum(len(t.tokens) for t in traces) * target_step
    spec = sum(t.num_target_calls * target_step + t.num_draft_calls * draft_step for t in traces)
    return base / spec if spec else 0.0


@torch.no_grad()
def measure_speedup(
    target: torch.nn.Module,
    target_embeds: torch.Tensor,
    draft: torch.nn.Module,
    draft_embeds: torch.Tensor,
    gamma: int | None,
    max_new_tokens: int,
    eos_token_id: int | list[int] | None,
    repeats: int = 5,
    *,
    gammas: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8),
    num_threads: int | None = 1,
) -> SpeedupResult:
    """Target-alone greedy vs :func:`speculative_generate` on the same ``B`` prompts, wall clock in one run.

    Args:
        target_embeds: ``[B, L_t, H_t]`` the target's prompts (e.g. RGB video); ``draft_embeds``: ``[B, L_d, H_d]``
            the draft's own prompts for the same samples (e.g. aligned event tokens through the draft's projector).
        gamma: tokens drafted per round; None picks the gamma in ``gammas`` with the best predicted speedup
            from exact per-round counts (:func:`trace_acceptance` on the target's greedy tokens) and the
            one-token step times of a warm-up run.
        repeats: timed runs per prompt and method, interleaved (target, speculative, target, ...) so that
            drifting machine load hits both; medians per prompt.
        num_threads: torch CPU threads during the measurement (restored after); None leaves it.
    """
    for model, name in ((target, "target"), (draft, "draft")):
        _check_model(model, name)
    t_all = check_embeds(target_embeds, target, "target_embeds")
    d_all = check_embeds(draft_embeds, draft, "draft_embeds")
    if t_all.shape[0] != d_all.shape[0]:
        raise ValueError(f"target_embeds has {t_all.shape[0]} prompts but draft_embeds {d_all.shape[0]}: expected one each")
    budget, eos = check_budget(max_new_tokens), _eos_list(eos_token_id)
    if int(repeats) != repeats or repeats < 1:
        raise ValueError(f"repeats={repeats} is invalid: expected an integer >= 1")
    if gamma is not None and (int(gamma) != gamma or gamma < 1):
        raise ValueError(f"gamma={gamma} is invalid: expected an integer >= 1 or None (choose it)")
    device = t_all.device
    threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _measure(target, t_all, draft, d_all, gamma, budget, eos, int(repeats), gammas, device)
    finally:
        torch.set_num_threads(threads)


def _measure(target, t_all, draft, d_all, gamma, budget, eos, repeats, gammas, device) -> SpeedupResult:
    n = t_all.shape[0]
    target_steps: list[float] = []
    draft_steps: list[float] = []
    # warm-up (also the reference tokens and the step times used to choose gamma)
    reference = [greedy_tokens(target, t_all[i : i + 1], budget, eos, target_steps.append)[0] for i in range(n)]
    for i in range(n):
        speculative_generate(target, t_all[i : i + 1], draft, d_all[i : i + 1], gamma or 4, budget, eos,
                             draft_steps=draft_steps)
    predicted: dict[int, float] = {}
    chosen = gamma is None
    if chosen:
        t_step, d_step = statistics.median(target_steps), statistics.median(draft_steps or [0.0])
        for g in gammas:
            traces = trace_acceptance(draft, d_all, reference, g, eos, max_new_tokens=budget)
            predicted[g] = _predicted_speedup(traces, t_step, d_step)
        gamma = max(predicted, key=predicted.get)
    target_steps.clear()
    draft_steps.clear()
    base_times: list[list[float]] = [[] for _ in range(n)]
    spec_times: list[list[float]] = [[] for _ in range(n)]
    identical, results = True, []
    for _ in range(repeats):
        for i in range(n):
            _sync(device)
            t0 = time.perf_counter()
            base = greedy_tokens(target, t_all[i : i + 1], budget, eos, target_steps.append)[0]
            _sync(device)
            base_times[i].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            spec = speculative_generate(target, t_all[i : i + 1], draft, d_all[i : i + 1], gamma, budget, eos,
                                        draft_steps=draft_steps)
            _sync(device)
            spec_times[i].append(time.perf_counter() - t0)
            identical &= base == reference[i] and spec.tokens.tolist() == reference[i]
            results.append(spec)
    target_ms = 1e3 * statistics.fmean(statistics.median(t) for t in base_times)
    spec_ms = 1e3 * statistics.fmean(statistics.median(t) for t in spec_times)
    accepted = sum(sum(r.accepted_per_round) for r in results)
    drafted = sum(sum(r.drafted_per_round) for r in results)
    rejections = sum(a < d for r in results for a, d in zip(r.accepted_per_round, r.drafted_per_round))
    alpha = accepted / drafted if drafted else 0.0
    alpha_tok = accepted / (accepted + rejections) if accepted + rejections else 0.0
    t_step = statistics.median(target_steps) if target_steps else 0.0
    d_step = statistics.median(draft_steps) if draft_steps else 0.0
    cost = d_step / t_step if t_step else 0.0
    return SpeedupResult(
        speedup=target_ms / spec_ms, tokens_identical=bool(identical), alpha=alpha, alpha_per_token=alpha_tok,
        gamma=int(gamma), gamma_chosen=chosen, cost_ratio=cost,
        implied_speedup=walltime_improvement(alpha_tok, int(gamma), cost),
        target_ms=target_ms, speculative_ms=spec_ms, target_step_ms=1e3 * t_step, draft_step_ms=1e3 * d_step,
        tokens_per_target_call=sum(len(r.tokens) for r in results) / sum(r.num_target_calls for r in results),
        mean_new_tokens=statistics.fmean(len(r) for r in reference), num_prompts=n, repeats=repeats,
        device=str(device), predicted_by_gamma=predicted,
    )


# ---------------------------------------------------------------------------------------------
# transformers' assisted generation with a draft that reads its own visual tokens


def _own_visual_assistant(draft: torch.nn.Module, draft_features: dict[str, Any]) -> torch.nn.Module:
    """A shallow copy of ``draft`` whose prefill reads its own projected visual tokens.

    transformers drops ``mm_encoder_outputs`` outside the prefill of the assistant (``is_first_iteration`` is
    False there), so the copy's ``prepare_inputs_for_generation`` adds its own while its cache is empty.
    """
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    own = {
        kind: BaseModelOutputWithPooling(pooler_output=draft.model.multi_modal_projector(
            feats.flatten(0, -3).to(draft.dtype)))
        for kind, feats in draft_features.items()
    }
    assistant = copy.copy(draft)  # shares the weights; only this copy's generation hook changes
    original = draft.prepare_inputs_for_generation

    def prepare(input_ids, *args, **kwargs):
        inputs = original(input_ids, *args, **kwargs)
        cache = inputs.get("cache")
        if cache is None or cache.get_seq_length() == 0:
            inputs["mm_encoder_outputs"] = dict(own)
        else:
            inputs.pop("mm_encoder_outputs", None)
        return inputs

    assistant.prepare_inputs_for_generation = prepare
    return assistant


@torch.no_grad()
def assisted_generate(
    target: torch.nn.Module,
    draft: torch.nn.Module,
    input_ids: torch.Tensor,
    *,
    target_video_features: torch.Tensor,
    draft_video_features: torch.Tensor,
    gamma: int,
    max_new_tokens: int,
) -> torch.Tensor:
    """``target.generate(assistant_model=...)`` (greedy, constant ``gamma``) where each VideoLlava reads its own
    tower-space video tokens ``[1, F, T, D]`` at the same placeholder layout ``input_ids [1, L]``; returns the
    new tokens ``[T]``."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    projected = target.model.multi_modal_projector(
        target_video_features.flatten(0, -3).to(target.dtype))
    assistant = _own_visual_assistant(draft, {"video": draft_video_features})
    config = copy.deepcopy(assistant.generation_config)
    config.num_assistant_tokens, config.num_assistant_tokens_schedule = int(gamma), "constant"
    config.assistant_confidence_threshold = 0.0
    assistant.generation_config = config
    out = target.generate(
        input_ids=input_ids, mm_encoder_outputs={"video": BaseModelOutputWithPooling(pooler_output=projected)},
        assistant_model=assistant, do_sample=False, max_new_tokens=max_new_tokens,
    )
    return out[0, input_ids.shape[1]:]
