"""Measured speculative-decoding acceptance between two causal LMs whose prompts differ.

The draft (e.g. EventGPT's LLaMA) sees aligned event features as an ``inputs_embeds`` prefix; the
target (e.g. Video-LLaVA's LLaMA) sees projected RGB features. Both must share token ids. This
module replaces the brief's heuristic "acceptance = f(cosine)": acceptance is *measured* by running
the exact greedy draft/verify loop of speculative decoding (Leviathan et al. 2023, greedy case).

Three entry points:

* :func:`measure_acceptance`: the draft/verify loop itself (KV caches, or full recomputation).
* :func:`acceptance_from_trace`: the same counts from one greedy target generation plus one
  teacher-forced draft pass (exact for greedy decoding, much cheaper for many gammas).
* :func:`feature_agreement_proxy`: a feature-level proxy (fraction of token positions whose cosine
  exceeds a threshold). It is a separate number, not an acceptance rate.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

__all__ = [
    "AcceptanceResult",
    "acceptance_from_trace",
    "expected_tokens_per_iteration",
    "feature_agreement_proxy",
    "greedy_generate",
    "measure_acceptance",
    "result_from_matches",
    "walltime_improvement",
]


def expected_tokens_per_iteration(alpha: float, gamma: int) -> float:
    """Leviathan et al. (2023) eq. 1: ``(1 - alpha^(gamma+1)) / (1 - alpha)`` (``gamma + 1`` at alpha = 1)."""
    _check_alpha_gamma(alpha, gamma)
    if alpha >= 1.0:
        return float(gamma + 1)
    return (1.0 - alpha ** (gamma + 1)) / (1.0 - alpha)


def walltime_improvement(alpha: float, gamma: int, cost_ratio: float) -> float:
    """Leviathan et al. (2023) theorem 3.8: ``(1 - alpha^(gamma+1)) / ((1 - alpha)(gamma c + 1))``.

    ``cost_ratio`` (c) is the time of one draft forward divided by the time of one target forward.
    """
    if cost_ratio < 0:
        raise ValueError(f"cost_ratio={cost_ratio} is invalid: expected a value >= 0")
    return expected_tokens_per_iteration(alpha, gamma) / (gamma * cost_ratio + 1.0)


def _check_alpha_gamma(alpha: float, gamma: int) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} is invalid: expected a probability in [0, 1]")
    if int(gamma) != gamma or gamma < 1:
        raise ValueError(f"gamma={gamma} is invalid: expected an integer >= 1")


@dataclass
class AcceptanceResult:
    """Counts of a greedy speculative-decoding run and the numbers derived from them.

    Definitions (each number is computed from the per-round counts, never from feature similarity):

    * ``tokens``: LongTensor ``[T]``, the generated ids; identical to the target's greedy output.
    * ``drafted_per_round[r]``: tokens the draft proposed in round r (``min(gamma, remaining - 1)``:
      the last token of the budget always comes from the target, as in transformers' assisted generation).
    * ``accepted_per_round[r]``: length of the longest drafted prefix equal to the target's argmax.
      Every round then appends one token of the target's own (correction or bonus), so a round emits
      ``accepted + 1`` tokens (fewer only when an EOS cuts it).
    * ``alpha``: total accepted / total drafted (the acceptance rate asked for in the issue). It
      under-counts the per-token acceptance probability because drafts after a rejection count as
      drafted but were never compared on an equal footing.
    * ``alpha_per_token``: accepted / (accepted + rejections), the maximum-likelihood estimate of the
      i.i.d. per-token acceptance probability of Leviathan et al.'s model (a rejection = a round that
      stopped at a mismatch). This is the alpha plugged into their formulas below.
    * ``tau``: mean accepted drafted tokens per round.
    * ``tokens_per_target_call``: len(tokens) / target forward passes (one per round), i.e. measured
      tokens per iteration.
    * ``expected_tokens_per_iteration``: Leviathan eq. 1 at ``alpha_per_token`` and ``gamma``.
    * ``implied_walltime_improvement``: Leviathan theorem 3.8 at ``alpha_per_token``, ``gamma`` and
      ``cost_ratio``.
    * ``cost_ratio``: c used above; measured as (mean draft forward time) / (mean target forward time)
      when ``cost_ratio_measured`` is true (wall clock, noisy on a shared CPU).
    """

    tokens: torch.Tensor
    gamma: int
    drafted_per_round: list[int]
    accepted_per_round: list[int]
    num_target_calls: int
    num_draft_calls: int
    cost_ratio: float
    cost_ratio_measured: bool
    alpha: float = field(init=False)
    alpha_per_token: float = field(init=False)
    tau: float = field(init=False)
    tokens_per_target_call: float = field(init=False)
    expected_tokens_per_iteration: float = field(init=False)
    implied_walltime_improvement: float = field(init=False)

    def __post_init__(self) -> None:
        accepted, drafted = sum(self.accepted_per_round), sum(self.drafted_per_round)
        rejections = sum(a < d for a, d in zip(self.accepted_per_round, self.drafted_per_round))
        rounds = max(len(self.accepted_per_round), 1)
        self.alpha = accepted / drafted if drafted else 0.0
        verified = accepted + rejections
        self.alpha_per_token = accepted / verified if verified else 0.0
        self.tau = accepted / rounds
        self.tokens_per_target_call = len(self.tokens) / max(self.num_target_calls, 1)
        self.expected_tokens_per_iteration = expected_tokens_per_iteration(self.alpha_per_token, self.gamma)
        self.implied_walltime_improvement = walltime_improvement(self.alpha_per_token, self.gamma, self.cost_ratio)

    @property
    def num_rounds(self) -> int:
        return len(self.accepted_per_round)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tokens"] = self.tokens.tolist()
        out["num_rounds"] = self.num_rounds
        return out


def feature_agreement_proxy(
    draft_features: torch.Tensor, target_features: torch.Tensor, threshold: float = 0.9
) -> float:
    """Fraction of token positions whose cosine similarity exceeds ``threshold`` (a proxy, not acceptance).

    ``draft_features`` and ``target_features``: same shape ``[..., D]`` (e.g. ``[B, N, D]`` aligned event
    tokens vs target tokens); the cosine is taken over the last axis at each position.
    """
    for name, x in (("draft_features", draft_features), ("target_features", target_features)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if draft_features.shape != target_features.shape or draft_features.dim() < 1:
        raise ValueError(
            f"draft_features {tuple(draft_features.shape)} and target_features {tuple(target_features.shape)} "
            "must have the same shape [..., D]"
        )
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold={threshold} is invalid: expected a cosine in [-1, 1]")
    cos = torch.nn.functional.cosine_similarity(draft_features.double(), target_features.double(), dim=-1)
    return float((cos > threshold).double().mean())


# ---------------------------------------------------------------------------------------------
# validation


def _check_model(model: Any, name: str) -> None:
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "get_input_embeddings"):
        raise TypeError(f"{name} must be a Hugging Face causal LM (torch.nn.Module with get_input_embeddings)")
    if model.training:
        raise ValueError(f"{name} is in training mode (dropout makes the counts random): call {name}.eval() first")


def _prefix(embeds: Any, model: torch.nn.Module, name: str) -> torch.Tensor:
    """Validate an inputs_embeds prefix and return it as ``[1, L, H]`` in the model's dtype/device."""
    if not isinstance(embeds, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(embeds).__name__}")
    if embeds.dim() == 2:
        embeds = embeds.unsqueeze(0)
    hidden = model.get_input_embeddings().weight.shape[1]
    if embeds.dim() != 3 or embeds.shape[0] != 1 or embeds.shape[1] < 1 or embeds.shape[2] != hidden:
        raise ValueError(
            f"{name} has shape {tuple(embeds.shape)}: expected [1, L, {hidden}] or [L, {hidden}] with L >= 1 "
            "(one prompt at a time, hidden size of its model)"
        )
    param = next(model.parameters())
    return embeds.to(device=param.device, dtype=param.dtype)


def _check_run_args(draft_model, target_model, gamma: int, max_new_tokens: int) -> None:
    _check_model(draft_model, "draft_model")
    _check_model(target_model, "target_model")
    if int(gamma) != gamma or gamma < 1:
        raise ValueError(f"gamma={gamma} is invalid: expected an integer >= 1")
    if int(max_new_tokens) != max_new_tokens or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} is invalid: expected an integer >= 1")
    draft_vocab = draft_model.get_output_embeddings().weight.shape[0]
    target_vocab = target_model.get_input_embeddings().weight.shape[0]
    if draft_vocab > target_vocab:
        raise ValueError(
            f"draft vocabulary ({draft_vocab}) is larger than the target's ({target_vocab}): "
            "speculative decoding needs shared token ids"
        )


def _eos_set(eos_token_id: int | list[int] | None) -> set[int]:
    if eos_token_id is None:
        return set()
    return {int(eos_token_id)} if isinstance(eos_token_id, int) else {int(e) for e in eos_token_id}


# ---------------------------------------------------------------------------------------------
# a causal LM with a prefix, a committed token list and an optional KV cache


class _Stream:
    """Incremental forward passes of one LM over ``prefix_embeds + tokens``.

    With ``use_cache`` the KV cache always holds a prefix of the context and is cropped after a
    rejection; without it every call recomputes the whole context (the slow reference).
    """

    def __init__(self, model: torch.nn.Module, prefix: torch.Tensor, use_cache: bool):
        from transformers import DynamicCache

        self.model, self.prefix, self.use_cache = model, prefix, use_cache
        self.embed = model.get_input_embeddings()
        self.cache = DynamicCache(config=model.config) if use_cache else None
        self.cached = 0  # context positions held by the cache
        self.calls, self.seconds = 0, 0.0

    def logits(self, tokens: list[int], num_last: int) -> torch.Tensor:
        """Logits ``[num_last, V]`` at the last ``num_last`` positions of ``prefix + tokens``."""
        device = self.prefix.device
        ids = torch.tensor([tokens], dtype=torch.long, device=device)
        start = time.perf_counter()
        if self.cache is None or self.cached == 0:
            embeds = torch.cat([self.prefix, self.embed(ids)], dim=1)
            out = self.model(inputs_embeds=embeds, cache=self.cache, use_cache=self.use_cache)
        else:
            new = ids[:, self.cached - self.prefix.shape[1]:]
            position_ids = torch.arange(self.cached, self.cached + new.shape[1], device=device)[None]
            out = self.model(input_ids=new, cache=self.cache, position_ids=position_ids, use_cache=True)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        if self.cache is not None:
            self.cached = self.prefix.shape[1] + len(tokens)
        return out.logits[0, -num_last:].float()

    def rollback(self, num_tokens: int) -> None:
        """Forget everything after the first ``prefix + num_tokens`` positions (nothing when negative)."""
        keep = self.prefix.shape[1] + max(num_tokens, 0)
        if num_tokens < 0:
            return
        if self.cache is not None and self.cached > keep:
            self.cache.crop(keep - self.cached)
            self.cached = keep


@torch.no_grad()
def greedy_generate(
    model: torch.nn.Module,
    inputs_embeds: torch.Tensor,
    max_new_tokens: int,
    *,
    eos_token_id: int | list[int] | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """Greedy continuation ``[T]`` (T <= max_new_tokens, ending at the first EOS) of an embeddings prompt."""
    _check_model(model, "model")
    prefix = _prefix(inputs_embeds, model, "inputs_embeds")
    stream, eos, tokens = _Stream(model, prefix, use_cache), _eos_set(eos_token_id), []
    while len(tokens) < max_new_tokens:
        tokens.append(int(stream.logits(tokens, 1)[-1].argmax()))
        if tokens[-1] in eos:
            break
    return torch.tensor(tokens, dtype=torch.long)


@torch.no_grad()
def measure_acceptance(
    draft_model: torch.nn.Module,
    target_model: torch.nn.Module,
    draft_inputs_embeds: torch.Tensor,
    target_inputs_embeds: torch.Tensor,
    gamma: int = 5,
    max_new_tokens: int = 32,
    *,
    eos_token_id: int | list[int] | None = None,
    cost_ratio: float | None = None,
    use_cache: bool = True,
) -> AcceptanceResult:
    """Run exact greedy speculative decoding and count what the target accepts.

    Each round: the draft proposes ``k = min(gamma, remaining - 1)`` tokens greedily from
    ``draft_inputs_embeds + generated``; the target scores ``target_inputs_embeds + generated + drafts``
    in ONE forward pass; the longest drafted prefix equal to the target's argmax is accepted, then the
    target's own argmax after it is appended (correction, or bonus when all k were accepted). The
    output therefore equals the target's greedy generation.

    Args:
        draft_model, target_model: causal LMs (``LlamaForCausalLM`` etc.) sharing token ids, in eval mode.
        draft_inputs_embeds: ``[1, L_d, H_draft]`` or ``[L_d, H_draft]`` prompt of the draft (e.g. projected
            aligned event tokens followed by the embedded text prompt).
        target_inputs_embeds: ``[1, L_t, H_target]`` or ``[L_t, H_target]`` prompt of the target.
        gamma: tokens drafted per round (constant schedule).
        max_new_tokens: generation budget.
        eos_token_id: stop after the first of these ids (None: always generate ``max_new_tokens``). The
            draft always proposes k tokens (fixed gamma, as in Leviathan et al.); transformers' assistant
            stops drafting at an EOS, so its drafted counts can be lower in rounds where the draft emits one.
        cost_ratio: c for the implied wall-time improvement; None measures it from this run's forwards.
        use_cache: KV caches with rollback (default) or full recomputation at every forward (reference).

    Returns:
        :class:`AcceptanceResult` (see its docstring for the definition of every number).
    """
    _check_run_args(draft_model, target_model, gamma, max_new_tokens)
    if cost_ratio is not None and cost_ratio < 0:
        raise ValueError(f"cost_ratio={cost_ratio} is invalid: expected a value >= 0 or None (measure it)")
    draft = _Stream(draft_model, _prefix(draft_inputs_embeds, draft_model, "draft_inputs_embeds"), use_cache)
    target = _Stream(target_model, _prefix(target_inputs_embeds, target_model, "target_inputs_embeds"), use_cache)
    eos = _eos_set(eos_token_id)
    tokens: list[int] = []
    drafted_per_round: list[int] = []
    accepted_per_round: list[int] = []
    finished = False
    while len(tokens) < max_new_tokens and not finished:
        k = min(gamma, max_new_tokens - len(tokens) - 1)
        # Caches keep the committed context except its last token (the target's own choice, which
        # may sit where a rejected draft was cached); both models re-read it this round.
        draft.rollback(len(tokens) - 1)
        target.rollback(len(tokens) - 1)
        proposal: list[int] = []
        for _ in range(k):
            proposal.append(int(draft.logits(tokens + proposal, 1)[-1].argmax()))
        choice = target.logits(tokens + proposal, k + 1).argmax(dim=-1).tolist()
        accepted = 0
        while accepted < k and proposal[accepted] == choice[accepted]:
            accepted += 1
        new = proposal[:accepted] + [choice[accepted]]
        for i, tok in enumerate(new):  # an EOS ends the run; later tokens are discarded
            if tok in eos:
                new, accepted, finished = new[: i + 1], min(accepted, i), True
                break
        tokens += new
        drafted_per_round.append(k)
        accepted_per_round.append(accepted)
    measured = cost_ratio is None
    if measured:
        per_draft = draft.seconds / draft.calls if draft.calls else 0.0
        cost_ratio = per_draft / (target.seconds / target.calls)
    return AcceptanceResult(
        tokens=torch.tensor(tokens, dtype=torch.long),
        gamma=int(gamma),
        drafted_per_round=drafted_per_round,
        accepted_per_round=accepted_per_round,
        num_target_calls=target.calls,
        num_draft_calls=draft.calls,
        cost_ratio=float(cost_ratio),
        cost_ratio_measured=measured,
    )


@torch.no_grad()
def acceptance_from_trace(
    draft_model: torch.nn.Module,
    target_model: torch.nn.Module,
    draft_inputs_embeds: torch.Tensor,
    target_inputs_embeds: torch.Tensor,
    gamma: int = 5,
    max_new_tokens: int = 32,
    *,
    eos_token_id: int | list[int] | None = None,
    cost_ratio: float = 0.0,
) -> AcceptanceResult:
    """The counts of :func:`measure_acceptance` from one target generation and one draft pass.

    Greedy speculative decoding only ever commits the target's greedy tokens y, and a drafted token
    can be accepted only while all earlier drafts of its round were accepted, i.e. while the draft's
    context equals the committed y. So one teacher-forced draft pass over ``draft prompt + y`` gives
    ``match[i] = (draft argmax after y[:i]) == y[i]``, and each round accepts the leading run of
    matches among its k positions. The counts equal the loop's exactly (up to floating-point ties).
    ``num_target_calls``/``num_draft_calls`` are those the loop would make; ``cost_ratio`` is taken as given.
    """
    _check_run_args(draft_model, target_model, gamma, max_new_tokens)
    target_prefix = _prefix(target_inputs_embeds, target_model, "target_inputs_embeds")
    draft_prefix = _prefix(draft_inputs_embeds, draft_model, "draft_inputs_embeds")
    y = greedy_generate(target_model, target_prefix, max_new_tokens, eos_token_id=eos_token_id).tolist()
    draft = _Stream(draft_model, draft_prefix, use_cache=False)
    match = (draft.logits(y[:-1], len(y)).argmax(dim=-1).cpu() == torch.tensor(y)).tolist()
    return result_from_matches(y, match, gamma, max_new_tokens, cost_ratio)


def result_from_matches(
    tokens: list[int], match: list[bool], gamma: int, max_new_tokens: int, cost_ratio: float = 0.0
) -> AcceptanceResult:
    """The loop's rounds from the target's greedy ``tokens`` and ``match[i]`` = (the draft's greedy choice after
    ``tokens[:i]`` equals ``tokens[i]``): each round accepts the leading run of matches among its
    ``k = min(gamma, max_new_tokens - pos - 1)`` drafts; the last token (an EOS or the budget's end) is the target's."""
    drafted_per_round, accepted_per_round, pos = [], [], 0
    while pos < len(tokens):
        k = min(gamma, max_new_tokens - pos - 1)
        accepted = 0
        while accepted < k and pos + accepted < len(tokens) - 1 and match[pos + accepted]:
            accepted += 1
        drafted_per_round.append(k)
        accepted_per_round.append(accepted)
        pos += accepted + 1
    return AcceptanceResult(
        tokens=torch.tensor(tokens, dtype=torch.long),
        gamma=int(gamma),
        drafted_per_round=drafted_per_round,
        accepted_per_round=accepted_per_round,
        num_target_calls=len(accepted_per_round),
        num_draft_calls=sum(drafted_per_round),
        cost_ratio=float(cost_ratio),
        cost_ratio_measured=False,
    )
