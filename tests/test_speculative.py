"""Measured speculative-decoding acceptance: exact against greedy generate and transformers' assisted generation."""

from __future__ import annotations

import copy
import math
from unittest import mock

import pytest
import torch
from transformers import LlamaForCausalLM
from transformers.generation.candidate_generator import AssistedCandidateGenerator

from modeling_evalign.evaluation.speculative import (
    AcceptanceResult,
    acceptance_from_trace,
    expected_tokens_per_iteration,
    feature_agreement_proxy,
    greedy_generate,
    measure_acceptance,
    walltime_improvement,
)
from modeling_evalign.features.tiny_models import tiny_llama_config

HIDDEN = 48


def _perturbed(model: LlamaForCausalLM, scale: float, seed: int) -> LlamaForCausalLM:
    """A copy whose every weight gets relative Gaussian noise: a draft that agrees often, not always."""
    gen = torch.Generator().manual_seed(seed)
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * p.std() * torch.randn(p.shape, generator=gen))
    return other.eval()


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(1234)
    target = LlamaForCausalLM(tiny_llama_config(hidden_size=HIDDEN)).eval()
    return target, _perturbed(target, 0.05, seed=7)


def _embeds(seed: int, length: int = 6) -> torch.Tensor:
    return torch.randn(1, length, HIDDEN, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("use_cache", [True, False])
def test_identical_models_accept_everything_and_match_generate(models, use_cache):
    target, _ = models
    prompt = _embeds(0)
    result = measure_acceptance(target, target, prompt, prompt, gamma=4, max_new_tokens=18, use_cache=use_cache)
    reference = target.generate(inputs_embeds=prompt, max_new_tokens=18, do_sample=False)[0]
    assert torch.equal(result.tokens, reference)
    assert result.alpha == 1.0 and result.alpha_per_token == 1.0
    # 18 tokens, gamma 4: rounds of 5 tokens; the last round drafts 2 (the budget's last token is the target's)
    assert result.drafted_per_round == [4, 4, 4, 2]
    assert result.accepted_per_round == result.drafted_per_round
    assert result.num_target_calls == 4 and result.tokens_per_target_call == 4.5


def test_perturbed_draft_counts_equal_transformers_assisted_generation(models):
    target, draft = models
    ids = torch.randint(0, 128, (1, 5), generator=torch.Generator().manual_seed(3))
    gamma, budget = 3, 24
    assistant = copy.deepcopy(draft)
    assistant.generation_config.num_assistant_tokens = gamma
    assistant.generation_config.num_assistant_tokens_schedule = "constant"
    assistant.generation_config.assistant_confidence_threshold = 0.0  # no early stop of the draft

    rounds: list[tuple[int, int]] = []
    original = AssistedCandidateGenerator.update_candidate_strategy

    def spy(self, input_ids, scores, num_matches):  # scores: [1, drafted + 1, V]
        rounds.append((int(num_matches), scores.shape[1] - 1))
        return original(self, input_ids, scores, num_matches)

    with mock.patch.object(AssistedCandidateGenerator, "update_candidate_strategy", spy):
        hf_out = target.generate(ids, assistant_model=assistant, do_sample=False, max_new_tokens=budget)
    with torch.no_grad():
        result = measure_acceptance(
            draft, target, draft.get_input_embeddings()(ids), target.get_input_embeddings()(ids),
            gamma=gamma, max_new_tokens=budget,
        )
    assert torch.equal(result.tokens, hf_out[0, ids.shape[1]:])
    assert list(zip(result.accepted_per_round, result.drafted_per_round)) == rounds
    assert 0.0 < result.alpha < 1.0


def test_trace_equals_loop_with_different_prefixes(models):
    target, draft = models
    torch.manual_seed(5)
    small_draft = LlamaForCausalLM(tiny_llama_config(hidden_size=32)).eval()  # other width, own prefix
    cases = [(draft, _embeds(10), _embeds(11)), (draft, _embeds(12), _embeds(12)), (small_draft, None, _embeds(13))]
    alphas = []
    for drafter, draft_prompt, target_prompt in cases:
        if draft_prompt is None:
            draft_prompt = torch.randn(1, 9, 32, generator=torch.Generator().manual_seed(14))
        for gamma in (1, 3, 5):
            loop = measure_acceptance(drafter, target, draft_prompt, target_prompt, gamma=gamma, max_new_tokens=17)
            slow = measure_acceptance(
                drafter, target, draft_prompt, target_prompt, gamma=gamma, max_new_tokens=17, use_cache=False
            )
            trace = acceptance_from_trace(drafter, target, draft_prompt, target_prompt, gamma=gamma, max_new_tokens=17)
            for other in (slow, trace):
                assert torch.equal(other.tokens, loop.tokens)
                assert other.accepted_per_round == loop.accepted_per_round
                assert other.drafted_per_round == loop.drafted_per_round
            assert trace.num_target_calls == loop.num_target_calls
            assert trace.num_draft_calls == loop.num_draft_calls
            assert torch.equal(loop.tokens, greedy_generate(target, target_prompt, 17))
            alphas.append(loop.alpha)
    assert any(0.0 < a < 1.0 for a in alphas)


def test_eos_stops_loop_and_trace_identically(models):
    target, draft = models
    prompt = _embeds(21)
    free = greedy_generate(target, prompt, 20).tolist()
    eos = free[9]
    cut = free.index(eos) + 1
    for gamma in (2, 4):
        loop = measure_acceptance(draft, target, prompt, prompt, gamma=gamma, max_new_tokens=20, eos_token_id=eos)
        trace = acceptance_from_trace(draft, target, prompt, prompt, gamma=gamma, max_new_tokens=20, eos_token_id=[eos])
        assert loop.tokens.tolist() == free[:cut]
        assert trace.tokens.tolist() == free[:cut]
        assert loop.accepted_per_round == trace.accepted_per_round
        assert sum(loop.accepted_per_round) + loop.num_rounds == cut


def test_leviathan_formulas_against_series():
    for alpha in (0.0, 0.3, 0.8, 0.999, 1.0):
        for gamma in (1, 4, 7):
            series = sum(alpha**i for i in range(gamma + 1))
            assert expected_tokens_per_iteration(alpha, gamma) == pytest.approx(series, rel=1e-9)
            assert walltime_improvement(alpha, gamma, 0.1) == pytest.approx(series / (0.1 * gamma + 1), rel=1e-9)
    with pytest.raises(ValueError, match="alpha"):
        expected_tokens_per_iteration(1.5, 3)
    with pytest.raises(ValueError, match="gamma"):
        expected_tokens_per_iteration(0.5, 0)
    with pytest.raises(ValueError, match="cost_ratio"):
        walltime_improvement(0.5, 3, -1.0)


def test_result_definitions_from_hand_counts():
    result = AcceptanceResult(
        tokens=torch.arange(11), gamma=4, drafted_per_round=[4, 4, 2], accepted_per_round=[4, 1, 2],
        num_target_calls=3, num_draft_calls=10, cost_ratio=0.5, cost_ratio_measured=False,
    )
    assert result.alpha == pytest.approx(7 / 10)
    assert result.alpha_per_token == pytest.approx(7 / 8)  # one rejection (round 2)
    assert result.tau == pytest.approx(7 / 3)
    assert result.tokens_per_target_call == pytest.approx(11 / 3)
    a = 7 / 8
    assert result.expected_tokens_per_iteration == pytest.approx((1 - a**5) / (1 - a))
    assert result.implied_walltime_improvement == pytest.approx((1 - a**5) / ((1 - a) * (4 * 0.5 + 1)))
    assert result.to_dict()["tokens"] == list(range(11))


def test_feature_agreement_proxy_against_loop():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 7, 16, generator=gen), torch.randn(3, 7, 16, generator=gen)
    b[0] = 2.0 * a[0]  # 7 of 21 positions identical in direction
    expected = sum(
        float(torch.dot(a[i, j], b[i, j]) / (a[i, j].norm() * b[i, j].norm())) > 0.9 for i in range(3) for j in range(7)
    ) / 21
    assert feature_agreement_proxy(a, b, threshold=0.9) == pytest.approx(expected)
    assert expected >= 7 / 21
    with pytest.raises(ValueError, match="same shape"):
        feature_agreement_proxy(a, b[:, :5])
    with pytest.raises(ValueError, match="threshold"):
        feature_agreement_proxy(a, b, threshold=2.0)


def test_bad_inputs_raise(models):
    target, draft = models
    prompt = _embeds(0)
    with pytest.raises(ValueError, match=r"draft_inputs_embeds.*\[1, L, 48\]"):
        measure_acceptance(draft, target, torch.randn(1, 4, 40), prompt)
    with pytest.raises(ValueError, match="target_inputs_embeds"):
        measure_acceptance(draft, target, prompt, prompt.repeat(2, 1, 1))
    with pytest.raises(ValueError, match="gamma"):
        measure_acceptance(draft, target, prompt, prompt, gamma=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        acceptance_from_trace(draft, target, prompt, prompt, max_new_tokens=0)
    with pytest.raises(TypeError, match="draft_model"):
        measure_acceptance(object(), target, prompt, prompt)
    with pytest.raises(TypeError, match="target_inputs_embeds"):
        measure_acceptance(draft, target, prompt, prompt.numpy())
    with pytest.raises(ValueError, match=r"training mode.*eval\(\)"):
        measure_acceptance(LlamaForCausalLM(tiny_llama_config(hidden_size=HIDDEN)), target, prompt, prompt)
    assert not math.isnan(measure_acceptance(draft, target, prompt, prompt, max_new_tokens=1).alpha)
