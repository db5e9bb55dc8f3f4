"""Speculative decoding with a cheap draft VLM vs target-alone greedy: wall clock, alpha, cost ratio, Leviathan.

    OMP_NUM_THREADS=1 python benchmarks/bench_speculative.py [--prompts 8] [--max-new-tokens 28]
        [--repeats 3] [--target-layers 8] [--hidden 256] [--residual-scale 0.05] [--noise 0.1] [--gamma auto] [--device cpu]

Models (built from configs, nothing downloaded): tiny ``VideoLlavaForConditionalGeneration`` stand-ins sized
like the planned proxy: a 5-frame video path of 26 tokens per frame (the proxy CLIP's 80 px / patch 16 layout,
width 128) and a LLaMA decoder of width ``--hidden`` with ``--target-layers`` layers. The draft is a COPY of
the target truncated to its first decoder layer (same width, 1 layer: about 1/8 of the target's per-token
work), and the target's later layers write into the residual stream scaled by ``--residual-scale``, so the
random draft agrees with the random target often but not always, as a distilled draft would. Until the proxy
VLM (built here by ``ensure_proxy_vlm``) is available, this stand-in is what the numbers describe; for a
trained proxy or a real VLM use ``python -m modeling_evalign.downstream.harness``.

Rows (one run, interleaved repeats, 1 torch thread, medians): the draft reads (a) the target's own visual
tokens ("oracle alignment"), (b) those tokens plus Gaussian noise of --noise times their std ("aligned events" stand-in),
(c) unrelated tokens ("unaligned"). Each row: target-alone ms, speculative ms (the draft's prefill counted),
measured speedup, alpha, gamma, measured cost ratio c, Leviathan's implied improvement; the output is checked
identical to the target's greedy output for every prompt. A last line times transformers' assisted generation
with the draft's own visual tokens (:func:`modeling_evalign.downstream.speedup.assisted_generate`) on row (b).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from modeling_evalign.downstream.generation import greedy_answers
from modeling_evalign.downstream.speedup import assisted_generate, measure_speedup
from modeling_evalign.downstream.visual import visual_inputs_embeds

FRAMES, PER_FRAME, TOWER, VOCAB, VIDEO_ID = 5, 26, 128, 1000, 999


def build(hidden: int, layers: int, residual_scale: float, seed: int = 0):
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        VideoLlavaConfig,
        VideoLlavaForConditionalGeneration,
    )

    def config(num_layers: int):
        vision = CLIPVisionConfig(image_size=80, patch_size=16, hidden_size=TOWER, intermediate_size=256,
                                  num_hidden_layers=2, num_attention_heads=4)
        text = LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden,
                           num_hidden_layers=num_layers, num_attention_heads=8, num_key_value_heads=8,
                           max_position_embeddings=512, initializer_range=0.2)
        return VideoLlavaConfig(vision_config=vision, text_config=text, image_token_index=VIDEO_ID - 1,
                                video_token_index=VIDEO_ID, image_seq_length=PER_FRAME - 1,
                                video_seq_length=FRAMES * PER_FRAME, vision_feature_layer=-2)

    torch.manual_seed(seed)
    target = VideoLlavaForConditionalGeneration(config(layers)).eval()
    with torch.no_grad():  # later layers nudge the residual stream: a first-layer draft agrees often
        for layer in target.model.language_model.layers[1:]:
            layer.self_attn.o_proj.weight.mul_(residual_scale)
            layer.mlp.down_proj.weight.mul_(residual_scale)
    draft = VideoLlavaForConditionalGeneration(config(1)).eval()
    missing, unexpected = draft.load_state_dict(target.state_dict(), strict=False)
    if missing or any(not k.startswith("model.language_model.layers.") for k in unexpected):
        raise RuntimeError(f"draft copy failed: missing {missing}")
    return target, draft


def prompt_ids(batch: int, text: int = 12, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([
        torch.cat([torch.tensor([1]), torch.full((FRAMES * PER_FRAME,), VIDEO_ID),
                   torch.randint(3, VOCAB - 2, (text,), generator=gen)])
        for _ in range(batch)
    ])


@torch.no_grad()
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=28, help="the caption answer's length (20-30 tokens)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--target-layers", type=int, default=8)
    p.add_argument("--residual-scale", type=float, default=0.05)
    p.add_argument("--noise", type=float, default=0.1, help="std of the aligned stand-in's noise (x token std)")
    p.add_argument("--gamma", default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gamma = None if args.gamma == "auto" else int(args.gamma)
    target, draft = (m.to(device) for m in build(args.hidden, args.target_layers, args.residual_scale))
    for model in (target, draft):  # no EOS: every answer has --max-new-tokens tokens (a long caption)
        model.generation_config.eos_token_id = None
    ids = prompt_ids(args.prompts).to(device)
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(args.prompts, FRAMES, PER_FRAME, TOWER, generator=gen).to(device)
    conditions = {
        "oracle (target's visual tokens)": feats,
        f"aligned stand-in (+{args.noise} std noise)": feats + args.noise * torch.randn(feats.shape, generator=gen).to(device),
        "unaligned (unrelated tokens)": torch.randn(feats.shape, generator=gen).to(device),
    }
    te = visual_inputs_embeds(target, ids, video_features=feats)
    n = args.max_new_tokens
    print(f"target: VideoLlava stand-in, decoder hidden {args.hidden} x {args.target_layers} layers; draft: its "
          f"first layer (1 layer); prompt {ids.shape[1]} tokens ({FRAMES}x{PER_FRAME} visual); {n} new tokens; "
          f"{args.prompts} prompts x {args.repeats} interleaved repeats; {args.threads} thread(s), {device}")
    print(f"{'draft reads':<36} {'target ms':>9} {'spec ms':>8} {'speedup':>7} {'alpha':>6} {'gamma':>5} "
          f"{'c':>5} {'implied':>7} {'identical':>9}")
    rows = {}
    for name, draft_feats in conditions.items():
        de = visual_inputs_embeds(draft, ids, video_features=draft_feats)
        r = measure_speedup(target, te, draft, de, gamma, n, None, args.repeats)
        rows[name] = r
        print(f"{name:<36} {r.target_ms:>9.1f} {r.speculative_ms:>8.1f} {r.speedup:>6.2f}x {r.alpha:>6.3f} "
              f"{r.gamma:>5} {r.cost_ratio:>5.3f} {r.implied_speedup:>6.2f}x {str(r.tokens_identical):>9}")
    # transformers' assisted generation with the draft's own visual tokens (prefill hook), same prompts, row (b)
    name = f"aligned stand-in (+{args.noise} std noise)"
    g = rows[name].gamma
    answers = greedy_answers(target, te, n, None)
    times, same = [], True
    for _ in range(args.repeats):
        per = []
        for i in range(args.prompts):
            t0 = time.perf_counter()
            out = assisted_generate(target, copy.copy(draft), ids[i : i + 1], target_video_features=feats[i : i + 1],
                                    draft_video_features=conditions[name][i : i + 1], gamma=g, max_new_tokens=n)
            per.append(time.perf_counter() - t0)
            same &= out.tolist() == answers[i]
        times.append(per)
    hf_ms = 1e3 * statistics.fmean(statistics.median(t[i] for t in times) for i in range(args.prompts))
    print(f"transformers assisted generate, own visual tokens, gamma {g}: {hf_ms:.1f} ms per prompt "
          f"({rows[name].target_ms / hf_ms:.2f}x vs the target-alone loop; identical {same})")


if __name__ == "__main__":
    main()
