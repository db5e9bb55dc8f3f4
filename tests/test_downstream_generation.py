"""Downstream VLM plumbing: visual tokens through the VLM's own projector, batched greedy answers, exact
per-sample acceptance, the lean speculative loop and the measured speedup (tiny VideoLlava configs)."""

from __future__ import annotations

import copy
from unittest import mock

import pytest
import torch
from tiny_vlm import EOS, IMAGE_ID, TOKENS, VIDEO_ID, pixels, prompt_ids, tiny_video_llava
from transformers.generation.candidate_generator import AssistedCandidateGenerator

from modeling_evalign.downstream.generation import greedy_answers, trace_acceptance
from modeling_evalign.downstream.speedup import assisted_generate, measure_speedup, speculative_generate
from modeling_evalign.downstream.visual import num_video_frames, tower_features, visual_inputs_embeds
from modeling_evalign.evaluation.speculative import greedy_generate, measure_acceptance, walltime_improvement

BUDGET = 12


def _perturbed(model, scale: float, seed: int):
    """A copy whose decoder weights get relative noise: a draft that agrees often, not always."""
    gen = torch.Generator().manual_seed(seed)
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.model.language_model.parameters():
            p.add_(scale * p.std() * torch.randn(p.shape, generator=gen))
    return other.eval()


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    target = tiny_video_llava(seed=0)
    draft = _perturbed(target, 0.1, seed=3)
    ids = prompt_ids(4, "video", seed=1)
    feats = tower_features(target, pixels(4, "video"), "video")
    noisy = feats + 0.3 * torch.randn(feats.shape, generator=torch.Generator().manual_seed(2))
    target_embeds = visual_inputs_embeds(target, ids, video_features=feats)
    draft_embeds = visual_inputs_embeds(draft, ids, video_features=noisy)
    answers = greedy_answers(target, target_embeds, BUDGET, EOS)
    return dict(target=target, draft=draft, ids=ids, feats=feats, noisy=noisy, te=target_embeds, de=draft_embeds,
                answers=answers)


@pytest.mark.parametrize("kind", ["video", "image"])
def test_visual_inputs_embeds_give_the_models_own_logits(kind):
    model = tiny_video_llava(seed=4)
    px, ids = pixels(2, kind, seed=5), prompt_ids(2, kind, seed=6)
    feats = tower_features(model, px, kind)
    assert feats.shape == ((2, TOKENS, 32) if kind == "image" else (2, 3, TOKENS + 1, 32))
    pixel_arg = {"pixel_values_videos": px} if kind == "video" else {"pixel_values": px}
    with torch.no_grad():
        reference = model(input_ids=ids, **pixel_arg).logits
        got = model(inputs_embeds=visual_inputs_embeds(model, ids, **{f"{kind}_features": feats})).logits
        # an independent float64 recomputation of the tower: CLS handling and layer choice
        tower = copy.deepcopy(model.model.video_tower if kind == "video" else model.model.image_tower).double()
        hidden = tower(px.reshape(-1, 3, 32, 32).double(), output_hidden_states=True).hidden_states[-2]
    torch.testing.assert_close(got, reference, rtol=0, atol=1e-5)
    expected = hidden[:, 1:] if kind == "image" else hidden.reshape(2, 3, TOKENS + 1, 32)
    torch.testing.assert_close(feats.double(), expected, rtol=0, atol=1e-5)
    assert num_video_frames(model.config) == 3


def test_visual_inputs_embeds_bad_inputs():
    model = tiny_video_llava(seed=4)
    ids = prompt_ids(2, "video")
    feats = torch.randn(2, 3, TOKENS + 1, 32)
    with pytest.raises(ValueError, match=r"video_features has shape \(2, 2, 17, 32\).*\[51, 51\] placeholder"):
        visual_inputs_embeds(model, ids, video_features=feats[:, :2])
    with pytest.raises(ValueError, match=r"D = 32"):
        visual_inputs_embeds(model, ids, video_features=torch.randn(2, 3, TOKENS + 1, 16))
    with pytest.raises(ValueError, match="kind"):
        tower_features(model, torch.randn(1, 3, 32, 32), "audio")
    with pytest.raises(ValueError, match=r"\[B, F, 3, H, W\]"):
        tower_features(model, torch.randn(1, 3, 32, 32), "video")
    assert (ids == VIDEO_ID).sum() == 2 * 3 * (TOKENS + 1) and not (ids == IMAGE_ID).any()


def test_greedy_answers_equal_generate_and_the_slow_loop(setup):
    target, te, answers = setup["target"], setup["te"], setup["answers"]
    assert any(len(a) < BUDGET and a[-1] == EOS for a in answers) and any(len(a) == BUDGET for a in answers)
    for row, answer in zip(te, answers):
        with torch.no_grad():
            hf = target.generate(inputs_embeds=row[None], max_new_tokens=BUDGET, do_sample=False)[0].tolist()
        slow = greedy_generate(target, row, BUDGET, eos_token_id=EOS, use_cache=False).tolist()
        assert answer == hf == slow


@pytest.mark.parametrize("gamma", [1, 3, 5])
def test_trace_and_lean_loop_equal_measure_acceptance(setup, gamma):
    target, draft, te, de, answers = (setup[k] for k in ("target", "draft", "te", "de", "answers"))
    traces = trace_acceptance(draft, de, answers, gamma, EOS, max_new_tokens=BUDGET)
    alphas = []
    for b in range(len(answers)):
        loop = measure_acceptance(draft, target, de[b], te[b], gamma=gamma, max_new_tokens=BUDGET, eos_token_id=EOS)
        lean = speculative_generate(target, te[b : b + 1], draft, de[b : b + 1], gamma, BUDGET, EOS)
        for other in (traces[b], lean):
            assert other.tokens.tolist() == loop.tokens.tolist() == answers[b]
            assert other.accepted_per_round == loop.accepted_per_round
            assert other.drafted_per_round == loop.drafted_per_round
            assert (other.num_target_calls, other.num_draft_calls) == (loop.num_target_calls, loop.num_draft_calls)
        alphas.append(loop.alpha)
    assert any(0.0 < a < 1.0 for a in alphas)


def test_assisted_generation_with_own_visual_tokens_equals_the_loop(setup):
    target, draft, ids, feats, noisy, te, de = (setup[k] for k in ("target", "draft", "ids", "feats", "noisy", "te", "de"))
    rounds: list[tuple[int, int]] = []
    original = AssistedCandidateGenerator.update_candidate_strategy

    def spy(self, input_ids, scores, num_matches):
        rounds.append((int(num_matches), scores.shape[1] - 1))
        return original(self, input_ids, scores, num_matches)

    for b in range(2):
        rounds.clear()
        with mock.patch.object(AssistedCandidateGenerator, "update_candidate_strategy", spy):
            out = assisted_generate(target, draft, ids[b : b + 1], target_video_features=feats[b : b + 1],
                                    draft_video_features=noisy[b : b + 1], gamma=3, max_new_tokens=BUDGET)
        loop = measure_acceptance(draft, target, de[b], te[b], gamma=3, max_new_tokens=BUDGET, eos_token_id=EOS)
        assert out.tolist() == loop.tokens.tolist() == setup["answers"][b]
        # transformers' assistant stops drafting at an EOS; compare the rounds before the last
        assert [a for a, _ in rounds[:-1]] == loop.accepted_per_round[: len(rounds) - 1]
    # without the hook the assistant reads the bare placeholder embeddings (transformers drops its visual input)
    plain = copy.deepcopy(draft)
    plain.generation_config.num_assistant_tokens, plain.generation_config.num_assistant_tokens_schedule = 3, "constant"
    plain.generation_config.assistant_confidence_threshold = 0.0
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    rounds.clear()
    with mock.patch.object(AssistedCandidateGenerator, "update_candidate_strategy", spy), torch.no_grad():
        projected = target.model.multi_modal_projector(feats[:1].flatten(0, -3))
        target.generate(input_ids=ids[:1], mm_encoder_outputs={"video": BaseModelOutputWithPooling(pooler_output=projected)},
                        assistant_model=plain, do_sample=False, max_new_tokens=BUDGET)
    bare = measure_acceptance(draft, target, draft.get_input_embeddings()(ids[:1]), te[0], gamma=3,
                              max_new_tokens=BUDGET, eos_token_id=EOS)
    assert [a for a, _ in rounds[:-1]] == bare.accepted_per_round[: len(rounds) - 1]


def test_measure_speedup_reports_consistent_numbers(setup):
    target, draft, te, de = (setup[k] for k in ("target", "draft", "te", "de"))
    result = measure_speedup(target, te[:2], draft, de[:2], None, BUDGET, EOS, repeats=1, gammas=(1, 2, 3))
    d = result.to_dict()
    for key in ("speedup", "tokens_identical", "alpha", "gamma", "cost_ratio", "implied_speedup", "target_ms",
                "speculative_ms"):
        assert key in d
    assert result.tokens_identical and result.gamma in (1, 2, 3) and result.gamma_chosen
    assert result.predicted_by_gamma[result.gamma] == max(result.predicted_by_gamma.values())
    assert result.speedup == pytest.approx(result.target_ms / result.speculative_ms)
    assert result.implied_speedup == pytest.approx(
        walltime_improvement(result.alpha_per_token, result.gamma, result.cost_ratio))
    assert result.cost_ratio == pytest.approx(result.draft_step_ms / result.target_step_ms)
    # alpha equals the exact trace's acceptance over the same prompts
    traces = trace_acceptance(draft, de[:2], setup["answers"][:2], result.gamma, EOS, max_new_tokens=BUDGET)
    accepted = sum(sum(t.accepted_per_round) for t in traces)
    assert result.alpha == pytest.approx(accepted / sum(sum(t.drafted_per_round) for t in traces))
    fixed = measure_speedup(target, te[:1], draft, de[:1], 2, BUDGET, EOS, repeats=1)
    assert fixed.gamma == 2 and not fixed.gamma_chosen and fixed.tokens_identical


def test_generation_bad_inputs(setup):
    target, draft, te, de, answers = (setup[k] for k in ("target", "draft", "te", "de", "answers"))
    with pytest.raises(ValueError, match=r"inputs_embeds has shape \(4, 56, 32\).*\[B, L, 48\]"):
        greedy_answers(target, de[..., :32], BUDGET, EOS)
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy_answers(target, te, 0, EOS)
    with pytest.raises(ValueError, match="3 rows but draft_embeds has 4"):
        trace_acceptance(draft, de, answers[:3], 2, EOS)
    short = [a if len(a) == BUDGET else a[:-1] for a in answers]  # an early stop without EOS
    with pytest.raises(ValueError, match="ends at an EOS"):
        trace_acceptance(draft, de, short, 2, EOS, max_new_tokens=BUDGET)
    with pytest.raises(ValueError, match="gamma"):
        speculative_generate(target, te[:1], draft, de[:1], 0, BUDGET, EOS)
    with pytest.raises(ValueError, match="one prompt"):
        speculative_generate(target, te, draft, de, 2, BUDGET, EOS)
    with pytest.raises(ValueError, match="training mode"):
        greedy_answers(copy.deepcopy(target).train(), te, BUDGET, EOS)
    with pytest.raises(ValueError, match="2 prompts but draft_embeds 1"):
        measure_speedup(target, te[:2], draft, de[:1], 2, BUDGET, EOS)
