"""Greedy answers of a (vision-)language model from ``inputs_embeds``, and exact speculative acceptance per sample.

* :func:`greedy_answers`: batched greedy decoding with a KV cache from embeddings prompts of equal length
  (the VLM prompts of the downstream evaluation all have the same layout, so no padding is needed).
* :func:`trace_acceptance`: the counts of the greedy draft/verify loop
  (:func:`modeling_evalign.evaluation.speculative.measure_acceptance`) for every sample, from the target's greedy
  tokens and ONE teacher-forced batched draft forward (greedy speculative decoding commits only the target's
  tokens, so a draft token is accepted exactly when the draft's argmax after the committed prefix equals it).
* :func:`measure_speedup` (in :mod:`.speedup`): wall clock of target-alone greedy vs speculative decoding.

Models: anything with ``get_input_embeddings`` whose forward takes ``input_ids``/``inputs_embeds``, ``cache``,
``position_ids`` and ``logits_to_keep`` (``LlamaForCausalLM``, ``VideoLlavaForConditionalGeneration``, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..evaluation.speculative import AcceptanceResult, result_from_matches

__all__ = ["greedy_answers", "measure_speedup", "trace_acceptance"]


def _eos_list(eos_token_id: int | list[int] | None) -> list[int]:
    if eos_token_id is None:
        return []
    return [int(eos_token_id)] if isinstance(eos_token_id, int) else [int(e) for e in eos_token_id]


def _check_model(model: Any, name: str) -> None:
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "get_input_embeddings"):
        raise TypeError(f"{name} must be a Hugging Face causal LM or VLM (torch.nn.Module with get_input_embeddings)")
    if model.training:
        raise ValueError(f"{name} is in training mode (dropout changes its greedy output): call {name}.eval() first")


def check_embeds(embeds: Any, model: torch.nn.Module, name: str) -> torch.Tensor:
    """``embeds`` as ``[B, L, H]`` on the model's device and dtype, H = the model's embedding width."""
    if not isinstance(embeds, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(embeds).__name__}")
    weight = model.get_input_embeddings().weight
    if embeds.dim() != 3 or embeds.shape[0] < 1 or embeds.shape[1] < 1 or embeds.shape[2] != weight.shape[1]:
        raise ValueError(
            f"{name} has shape {tuple(embeds.shape)}: expected [B, L, {weight.shape[1]}] (the model's hidden size)"
        )
    return embeds.to(device=weight.device, dtype=weight.dtype)


def check_budget(max_new_tokens: Any) -> int:
    if int(max_new_tokens) != max_new_tokens or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} is invalid: expected an integer >= 1")
    return int(max_new_tokens)


def forward_logits(
    model: torch.nn.Module,
    cache: Any,
    start: int,
    *,
    input_ids: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
    keep: int = 1,
) -> tuple[torch.Tensor, Any]:
    """One cached forward of ``input_ids``/``inputs_embeds`` at positions ``start..``: (logits ``[B, keep, V]``, cache)."""
    x = input_ids if input_ids is not None else inputs_embeds
    batch, length = x.shape[:2]
    position_ids = torch.arange(start, start + length, device=x.device).expand(batch, -1)
    out = model(
        input_ids=input_ids, inputs_embeds=inputs_embeds, cache=cache, position_ids=position_ids,
        use_cache=True, logits_to_keep=keep,
    )
    return out.logits, out.cache


def _cut_at_eos(rows: list[list[int]], eos: list[int]) -> list[list[int]]:
    out = []
    for row in rows:
        cut = next((i + 1 for i, tok in enumerate(row) if tok in eos), len(row))
        out.append(row[:cut])
    return out


def greedy_tokens(
    model: torch.nn.Module,
    inputs_embeds: torch.Tensor,
    max_new_tokens: int,
    eos: list[int],
    step_clock: Callable[[float], None] | None = None,
) -> list[list[int]]:
    """The loop behind :func:`greedy_answers` (validated inputs); ``step_clock`` receives each one-token step's seconds."""
    import time

    length = inputs_embeds.shape[1]
    logits, cache = forward_logits(model, None, 0, inputs_embeds=inputs_embeds)
    nxt = logits[:, -1].argmax(dim=-1)
    steps = [nxt]
    eos_t = torch.tensor(eos, dtype=nxt.dtype, device=nxt.device)
    done = torch.isin(nxt, eos_t)
    while len(steps) < max_new_tokens and not bool(done.all()):
        t0 = time.perf_counter()
        logits, cache = forward_logits(model, cache, length + len(steps) - 1, input_ids=nxt[:, None])
        nxt = logits[:, -1].argmax(dim=-1)
        if step_clock is not None:
            nxt_cpu = nxt.cpu()  # synchronises a GPU before the clock stops
            step_clock(time.perf_counter() - t0)
            del nxt_cpu
        steps.append(nxt)
        done |= torch.isin(nxt, eos_t)
    return _cut_at_eos(torch.stack(steps, dim=1).tolist(), eos)


@torch.no_grad()
def greedy_answers(
    model: torch.nn.Module, inputs_embeds: torch.Tensor, max_new_tokens: int, eos_token_id: int | list[int] | None
) -> list[list[int]]:
    """Greedy continuations of ``inputs_embeds [B, L, H]``, one list per row, each ending at its first EOS
    (included) or after ``max_new_tokens``. Same-length prompts need no padding; finished rows keep decoding
    in the batch until every row is done (their extra tokens are dropped), so each row equals its own
    unbatched greedy output up to floating-point ties."""
    _check_model(model, "model")
    embeds = check_embeds(inputs_embeds, model, "inputs_embeds")
    return greedy_tokens(model, embeds, check_budget(max_new_tokens), _eos_list(eos_token_id))


@torch.no_grad()
def trace_acceptance(
    draft: torch.nn.Module,
    draft_embeds: torch.Tensor,
    target_tokens: list[list[int]],
    gamma: int,
    eos_token_id: int | list[int] | None,
    *,
    max_new_tokens: int | None = None,
    cost_ratio: float = 0.0,
) -> list[AcceptanceResult]:
    """Exact greedy acceptance per sample: ``measure_acceptance``'s counts without running the loop.

    Args:
        draft: the draft model (eval mode); it reads ``draft_embeds [B, L_d, H_d]`` (e.g. the VLM prompt with
            aligned event tokens) followed by the target's tokens, in ONE teacher-forced batched forward
            (rows of different lengths are right-padded: causal attention never lets a position see the padding).
        target_tokens: the target's greedy tokens per sample (:func:`greedy_answers` of the target prompt).
        gamma: tokens drafted per round.
        eos_token_id: the EOS the target's tokens stop at; a row shorter than the budget must end with it.
        max_new_tokens: the generation budget the target ran with (default: the longest row); the last
            round of a row drafts ``min(gamma, budget - position - 1)`` tokens.
        cost_ratio: c stored in the results for Leviathan's implied improvement.
    """
    _check_model(draft, "draft")
    embeds = check_embeds(draft_embeds, draft, "draft_embeds")
    if int(gamma) != gamma or gamma < 1:
        raise ValueError(f"gamma={gamma} is invalid: expected an integer >= 1")
    if not isinstance(target_tokens, (list, tuple)) or len(target_tokens) != embeds.shape[0]:
        got = len(target_tokens) if isinstance(target_tokens, (list, tuple)) else type(target_tokens).__name__
        raise ValueError(f"target_tokens has {got} rows but draft_embeds has {embeds.shape[0]}: expected one per row")
    rows = [[int(t) for t in row] for row in target_tokens]
    if any(len(row) == 0 for row in rows):
        raise ValueError("target_tokens has an empty row: expected at least one generated token per sample")
    budget = check_budget(max_new_tokens if max_new_tokens is not None else max(len(r) for r in rows))
    eos = _eos_list(eos_token_id)
    for i, row in enumerate(rows):
        if len(row) > budget or (len(row) < budget and row[-1] not in eos):
            raise ValueError(
                f"target_tokens row {i} has {len(row)} tokens ending with {row[-1]}: a greedy output of budget "
                f"{budget} ends at an EOS {eos} or has exactly {budget} tokens"
            )
        if any(t in eos for t in row[:-1]):
            raise ValueError(f"target_tokens row {i} continues after an EOS: expected it to stop at the first one")
    longest = max(len(r) for r in rows)
    device = embeds.device
    forced = torch.zeros(len(rows), longest - 1, dtype=torch.long, device=device)
    for i, row in enumerate(rows):
        forced[i, : len(row) - 1] = torch.tensor(row[:-1], dtype=torch.long)
    inputs = torch.cat([embeds, draft.get_input_embeddings()(forced)], dim=1)
    logits, _ = forward_logits(draft, None, 0, inputs_embeds=inputs, keep=longest)
    choices = logits.argmax(dim=-1).tolist()
    return [
        result_from_matches(row, [choices[i][j] == row[j] for j in range(len(row))], int(gamma), budget, cost_ratio)
        for i, row in enumerate(rows)
    ]


def measure_speedup(*args, **kwargs):
    """Wall clock of target-alone greedy vs speculative decoding: see :func:`.speedup.measure_speedup`."""
    from .speedup import measure_speedup as _measure

    return _measure(*args, **kwargs)
