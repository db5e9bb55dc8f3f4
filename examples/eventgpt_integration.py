"""EventGPT integration: load an aligned checkpoint with AutoModel and measure speculative acceptance.

The real pipeline (dimensions checked in the public EventGPT / Video-LLaVA sources, see DESIGN.md):

* EventGPT (draft): frozen CLIP ViT-L/14-336 per event frame -> ``last_hidden_state [577, 1024]``
  (1 CLS + 24x24 patches); its own projector then pools 5 frames to ``[582, 4096]`` LLM tokens.
* Video-LLaVA (target): CLIP ViT-L/14 at 224, penultimate layer; an image is ``256 x 1024`` (16x16
  patches, CLS dropped), mapped by the projector ``Linear(1024, 4096)-GELU-Linear(4096, 4096)`` into
  the LLaMA (Vicuna-7B) embedding space. Token ids < 32000 are shared by both tokenizers.
* The lightweight adapter maps an event frame's ``[577, 1024]`` CLIP-336 tokens onto Video-LLaVA's
  ``[256, 1024]`` image tokens (token-grid resampling 24x24 -> 16x16, CLS dropped, then a linear map).
  Video-LLaVA's projector turns them into the draft's ``inputs_embeds`` prefix, so the draft reads the
  event view of the scene in exactly the space the target reads the RGB view in. (Aligning EventGPT's
  pooled ``[582, 4096]`` LLM tokens instead would be an adapter with event_dim=target_dim=4096 and no
  grid resampling; the flow below is the same.) EventGPT encodes 5 frames per sample: each frame
  goes through the same adapter; the stand-in below uses one frame per sample.

This script runs that flow end to end with tiny stand-ins built from configs (nothing is downloaded):
event tokens 1 + 6x6 of width 32, target tokens 4x4 of width 32, LLaMA-architecture LMs of width 48.
The target LM is random; the draft LM is a perturbed copy of it (EventGPT's LM is a different
network in reality, which is what keeps the acceptance below 1 even for perfect features).

Synthetic pairs: event tokens = a fixed random nonlinear function of the (upsampled) target tokens
plus noise. The adapter is fitted in closed form (ridge), saved with ``save_pretrained`` and reloaded
with ``AutoModel.from_pretrained(..., trust_remote_code=True)`` as EventGPT would. Acceptance is
measured by the exact greedy draft/verify loop (:func:`modeling_evalign.evaluation.speculative.measure_acceptance`)
with three draft prefixes:

* ``aligned``: projector(adapter(event tokens));
* ``unaligned``: projector applied directly to the event tokens after the same grid resampling
  (CLS dropped), zero-padded or truncated to the target width when the widths differ (with the real
  models both are 1024, so nothing is padded): what happens without an alignment step;
* ``oracle``: projector(true target tokens), the ceiling set by the draft LM itself.

Run: ``python examples/eventgpt_integration.py`` (about 10 s on one CPU core).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from modeling_evalign.evaluation.diagnosis import modality_gap
from modeling_evalign.evaluation.speculative import feature_agreement_proxy, measure_acceptance
from modeling_evalign.features.tiny_models import tiny_llama_config
from modeling_evalign.lightweight.configuration_lightweight import LightweightAlignmentConfig
from modeling_evalign.lightweight.modeling_lightweight import LightweightAlignmentModule
from modeling_evalign.token_grid import resample_token_grid
from modeling_evalign.utils.io_utils import atomic_write_text

# tiny stand-ins for (real): event grid 6x6 (24x24) + CLS, target grid 4x4 (16x16),
# CLIP width 32 (1024), LLM width 48 (4096), vocabulary 128 (32000)
EVENT_GRID = (6, 6)
TARGET_GRID = (4, 4)
LLM_HIDDEN = 48
VOCAB = 128
PROMPT_IDS = [5, 17, 42, 99]  # stand-in for the tokenised question after the image tokens


@dataclass
class ConditionSummary:
    """Acceptance of one draft prefix over all evaluation samples (definitions as in AcceptanceResult).

    alpha = sum accepted / sum drafted; alpha_per_token = accepted / (accepted + rejections);
    tau = mean accepted drafts per round; tokens_per_target_call = generated tokens / target forwards;
    feature_agreement = fraction of image tokens with cosine(draft-side, target-side) > 0.9 (a proxy);
    modality_gap = centroid distance of the pooled draft-side vs target-side features.
    """

    name: str
    alpha: float
    alpha_per_token: float
    tau: float
    tokens_per_target_call: float
    feature_agreement: float
    modality_gap: float


@dataclass
class IntegrationResult:
    """What :func:`main` measured: the adapter's fit and one summary per draft prefix."""

    checkpoint: str
    train_mse: float
    eval_mse_aligned: float
    gamma: int
    max_new_tokens: int
    num_eval: int
    conditions: dict[str, ConditionSummary]

    def format(self) -> str:
        head = f"{'draft prefix':<12} {'alpha':>7} {'alpha/tok':>9} {'tau':>6} {'tok/call':>8} {'cos>0.9':>8} {'gap':>7}"
        rows = [
            f"{c.name:<12} {c.alpha:>7.3f} {c.alpha_per_token:>9.3f} {c.tau:>6.2f} {c.tokens_per_target_call:>8.2f} "
            f"{c.feature_agreement:>8.3f} {c.modality_gap:>7.3f}"
            for c in self.conditions.values()
        ]
        return "\n".join([
            f"adapter: ridge fit, train MSE {self.train_mse:.4f}, eval MSE {self.eval_mse_aligned:.4f}",
            f"speculative decoding: gamma={self.gamma}, max_new_tokens={self.max_new_tokens}, "
            f"{self.num_eval} samples",
            head, *rows,
        ])


def make_pairs(n: int, dim: int, event_dim: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic pairs: target tokens ``[n, 16, dim]`` and event tokens ``[n, 1 + 36, event_dim]``.

    Target patches are spatially smooth (a random 2x2 field upsampled to 4x4, plus 30% per-patch
    detail), as neighbouring CLIP patches are correlated. Event patches = tanh(0.7 * upsampled target
    patches @ Q1) @ Q2 + noise, with random orthogonal Q1, Q2 fixed by ``seed``: a well-conditioned
    nonlinear stand-in for the unknown event-vs-RGB relation. The CLS token is the same map of the
    mean patch.
    """
    gen = torch.Generator().manual_seed(seed)
    q1 = torch.linalg.qr(torch.randn(dim, dim, generator=gen))[0]
    q2 = torch.linalg.qr(torch.randn(max(dim, event_dim), max(dim, event_dim), generator=gen))[0][:dim, :event_dim]
    coarse = torch.randn(n, 4, dim, generator=gen)
    target = resample_token_grid(coarse, (2, 2), TARGET_GRID, has_cls=False, mode="bilinear")
    target = target / target.std() + 0.3 * torch.randn(target.shape, generator=gen)
    up = resample_token_grid(target, TARGET_GRID, EVENT_GRID, has_cls=False, mode="bilinear")
    up = torch.cat([up.mean(1, keepdim=True), up], dim=1)
    event = torch.tanh(0.7 * up @ q1) @ q2
    return event + noise * torch.randn(event.shape, generator=gen), target


def unaligned_tokens(event: torch.Tensor, target_dim: int) -> torch.Tensor:
    """Event tokens without alignment: same grid resampling (CLS dropped), width zero-padded/truncated."""
    x = resample_token_grid(event, EVENT_GRID, TARGET_GRID, has_cls=True, keep_cls=False, mode="bilinear")
    if x.shape[-1] >= target_dim:
        return x[..., :target_dim]
    return nn.functional.pad(x, (0, target_dim - x.shape[-1]))


def build_language_models(seed: int, perturbation: float):
    """Target LM (Video-LLaVA stand-in), draft LM (EventGPT stand-in: perturbed copy) and the projector."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    target = LlamaForCausalLM(tiny_llama_config(vocab_size=VOCAB, hidden_size=LLM_HIDDEN)).eval()
    draft = copy.deepcopy(target)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(perturbation * p.std() * torch.randn(p.shape, generator=gen))
    return target, draft


def build_projector(dim: int, seed: int) -> nn.Module:
    """Video-LLaVA-style projector Linear(dim, H)-GELU-Linear(H, H) (1024 -> 4096 -> 4096 in reality)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(dim, LLM_HIDDEN), nn.GELU(), nn.Linear(LLM_HIDDEN, LLM_HIDDEN)).eval()


def prompt_embeds(model, projector: nn.Module, image_tokens: torch.Tensor) -> torch.Tensor:
    """``[1, 16 + len(PROMPT_IDS), H]``: projected image tokens followed by the embedded text prompt."""
    text = model.get_input_embeddings()(torch.tensor([PROMPT_IDS]))
    return torch.cat([projector(image_tokens[None]), text], dim=1)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num-train", type=int, default=256, help="synthetic pairs for the ridge fit")
    p.add_argument("--num-eval", type=int, default=6, help="held-out samples for the acceptance measurement")
    p.add_argument("--dim", type=int, default=32, help="target CLIP width (1024 in reality)")
    p.add_argument("--event-dim", type=int, default=32, help="event CLIP width (1024 in reality)")
    p.add_argument("--noise", type=float, default=0.05, help="noise std added to the event tokens")
    p.add_argument("--gamma", type=int, default=4, help="tokens drafted per round")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--perturbation", type=float, default=0.05, help="relative weight noise of the draft LM")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-dir", type=Path, default=None, help="where to save the adapter (default: temp)")
    p.add_argument("--json", type=Path, default=None, help="write the result as JSON here (atomically)")
    args = p.parse_args(argv)
    for name in ("num_train", "num_eval", "dim", "event_dim", "gamma", "max_new_tokens"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


@torch.no_grad()
def main(argv: list[str] | None = None) -> IntegrationResult:
    """Fit, save, reload the adapter, then measure acceptance for each draft prefix; print a table."""
    from transformers import AutoModel

    args = parse_args(argv)
    event, target = make_pairs(args.num_train + args.num_eval, args.dim, args.event_dim, args.noise, args.seed)
    train_e, train_t = event[: args.num_train], target[: args.num_train]
    eval_e, eval_t = event[args.num_train :], target[args.num_train :]

    # 1. fit the lightweight adapter (token level, 6x6 -> 4x4 grid, CLS dropped like Video-LLaVA images)
    config = LightweightAlignmentConfig(
        event_dim=args.event_dim, target_dim=args.dim, adapter_type="linear",
        source_grid=list(EVENT_GRID), target_grid=list(TARGET_GRID), has_cls_token=True, keep_cls_token=False,
    )
    adapter = LightweightAlignmentModule(config)
    fit = adapter.fit_closed_form(train_e, train_t)

    # 2. save, then load it as EventGPT would
    with tempfile.TemporaryDirectory(prefix="evalign-eventgpt-") as tmp:
        checkpoint = args.checkpoint_dir or Path(tmp) / "evalign-lightweight"
        adapter.save_pretrained(checkpoint)
        loaded = AutoModel.from_pretrained(checkpoint, trust_remote_code=True).eval()
    aligned = loaded(event_features=eval_e).aligned_features  # [num_eval, 16, dim]

    # 3. acceptance with each draft prefix; the target always reads the RGB (target) tokens
    target_lm, draft_lm = build_language_models(args.seed + 100, args.perturbation)
    projector = build_projector(args.dim, args.seed + 200)
    prefixes = {"aligned": aligned, "unaligned": unaligned_tokens(eval_e, args.dim), "oracle": eval_t}
    conditions = {}
    for name, draft_tokens in prefixes.items():
        totals = dict(accepted=0, drafted=0, rejections=0, rounds=0, tokens=0, calls=0)
        for i in range(args.num_eval):
            result = measure_acceptance(
                draft_lm, target_lm,
                prompt_embeds(draft_lm, projector, draft_tokens[i]),
                prompt_embeds(target_lm, projector, eval_t[i]),
                gamma=args.gamma, max_new_tokens=args.max_new_tokens, cost_ratio=1.0,
            )
            totals["accepted"] += sum(result.accepted_per_round)
            totals["drafted"] += sum(result.drafted_per_round)
            totals["rejections"] += sum(a < d for a, d in zip(result.accepted_per_round, result.drafted_per_round))
            totals["rounds"] += result.num_rounds
            totals["tokens"] += len(result.tokens)
            totals["calls"] += result.num_target_calls
        verified = totals["accepted"] + totals["rejections"]
        conditions[name] = ConditionSummary(
            name=name,
            alpha=totals["accepted"] / max(totals["drafted"], 1),
            alpha_per_token=totals["accepted"] / verified if verified else 0.0,
            tau=totals["accepted"] / totals["rounds"],
            tokens_per_target_call=totals["tokens"] / totals["calls"],
            feature_agreement=feature_agreement_proxy(draft_tokens, eval_t, threshold=0.9),
            modality_gap=modality_gap(draft_tokens.mean(1), eval_t.mean(1)),
        )

    out = IntegrationResult(
        checkpoint=str(args.checkpoint_dir or "<temporary directory>"),
        train_mse=fit.train_mse,
        eval_mse_aligned=float(((aligned - eval_t) ** 2).mean()),
        gamma=args.gamma,
        max_new_tokens=args.max_new_tokens,
        num_eval=args.num_eval,
        conditions=conditions,
    )
    print(out.format())
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(asdict(out), indent=2) + "\n")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
