"""Cost of measuring speculative-decoding acceptance: the draft/verify loop (KV cache or full
recomputation), the trace method, and transformers' assisted generation, against plain greedy
generation of the target measured in the same run (the baseline, ratio 1.00).

    python benchmarks/bench_speculative.py [--hidden 256 --layers 4 --vocab 1000] [--prompt 64]
        [--max-new-tokens 64] [--gamma 4] [--perturbation 0.02] [--repeats 3] [--device cpu|cuda]

Models are LLaMA-architecture LMs built from configs (random weights, nothing downloaded); the draft
is the target with --perturbation (2%) relative weight noise, so acceptance is strictly between 0 and 1. Every method
is checked to report the same per-round counts before its time is printed.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from transformers import LlamaForCausalLM

from modeling_evalign.evaluation.speculative import acceptance_from_trace, greedy_generate, measure_acceptance
from modeling_evalign.features.tiny_models import tiny_llama_config


def time_it(fn, device, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up, and the value checked below
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


@torch.no_grad()
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=1000)
    p.add_argument("--prompt", type=int, default=64, help="inputs_embeds prefix length")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--gamma", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--perturbation", type=float, default=0.02, help="relative weight noise of the draft")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    device = torch.device(args.device)

    torch.manual_seed(0)
    config = tiny_llama_config(vocab_size=args.vocab, hidden_size=args.hidden, num_layers=args.layers, num_heads=8)
    target = LlamaForCausalLM(config).eval().to(device)
    draft = copy.deepcopy(target)
    for param in draft.parameters():
        param.add_(args.perturbation * param.std() * torch.randn_like(param))
    prompt = torch.randn(1, args.prompt, args.hidden, device=device)
    ids = torch.randint(0, args.vocab, (1, args.prompt), device=device)
    n, g = args.max_new_tokens, args.gamma

    assistant = copy.deepcopy(draft)
    assistant.generation_config.num_assistant_tokens = g
    assistant.generation_config.num_assistant_tokens_schedule = "constant"
    assistant.generation_config.assistant_confidence_threshold = 0.0

    rows = []
    base, _ = time_it(lambda: greedy_generate(target, prompt, n), device, args.repeats)
    rows.append(("target greedy (baseline)", base, "-"))
    loop_t, loop = time_it(lambda: measure_acceptance(draft, target, prompt, prompt, g, n), device, args.repeats)
    rows.append(("measure_acceptance, KV cache", loop_t, f"{loop.alpha:.3f}"))
    slow_t, slow = time_it(
        lambda: measure_acceptance(draft, target, prompt, prompt, g, n, use_cache=False), device, args.repeats
    )
    rows.append(("measure_acceptance, recompute", slow_t, f"{slow.alpha:.3f}"))
    trace_t, trace = time_it(lambda: acceptance_from_trace(draft, target, prompt, prompt, g, n), device, args.repeats)
    rows.append(("acceptance_from_trace", trace_t, f"{trace.alpha:.3f}"))
    for other in (slow, trace):
        if other.accepted_per_round != loop.accepted_per_round or not torch.equal(other.tokens, loop.tokens):
            raise RuntimeError("methods disagree on the per-round counts: the timing would be meaningless")
    hf_base, _ = time_it(
        lambda: target.generate(ids, do_sample=False, max_new_tokens=n, min_new_tokens=n), device, args.repeats
    )
    rows.append(("transformers generate (token prompt)", hf_base, "-"))
    hf_t, _ = time_it(
        lambda: target.generate(ids, assistant_model=assistant, do_sample=False, max_new_tokens=n, min_new_tokens=n),
        device, args.repeats,
    )
    rows.append(("transformers assisted generate", hf_t, "-"))

    print(f"hidden {args.hidden}, layers {args.layers}, vocab {args.vocab}, prompt {args.prompt}, "
          f"new tokens {n}, gamma {g}, device {device}, median of {args.repeats}")
    print(f"{'method':<38} {'ms':>9} {'x baseline':>10} {'alpha':>6}")
    for name, sec, alpha in rows:
        print(f"{name:<38} {sec * 1e3:>9.1f} {sec / base:>10.2f} {alpha:>6}")


if __name__ == "__main__":
    main()
