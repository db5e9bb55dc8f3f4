"""Speculative decoding with a cheap draft VLM vs target-alone greedy: wall clock, alpha, cost ratio, Leviathan.

    OMP_NUM_THREADS=1 python benchmarks/bench_speculative.py [--models auto|proxy|standin] [--proxy-dir DIR] [--prompts 8]
        [--max-new-tokens N] [--repeats 3] [--duration 1.0] [--noise 0.1] [--gamma auto] [--device cpu]
        [stand-in only: --target-layers 8 --hidden 256 --residual-scale 0.05]

Models (``--models auto``: the proxy VLM when it is built, else the stand-ins; ``proxy`` builds it if needed):

* proxy: the proxy VLM pretrained here (:func:`modeling_evalign.downstream.proxy_vlm.ensure_proxy_vlm` on the
  proxy CLIP): its target and the draft distilled from it. Prompts = the caption question (the longest answer)
  on ``--prompts`` held-out windows of ``--duration`` s (the proxy's test camera paths); each model reads the
  windows' RGB video through its own tower (same CLIP weights) and its own projector. Answers stop at eos
  (budget ``--max-new-tokens``, default the proxy's own).
* standin: tiny random ``VideoLlavaForConditionalGeneration`` built from configs (nothing downloaded) sized like
  the proxy: a 5-frame video path of 26 tokens per frame, width 128, and a LLaMA decoder of width ``--hidden``
  with ``--target-layers`` layers. The draft is a COPY of the target truncated to its first decoder layer; the
  target's later layers write into the residual stream scaled by ``--residual-scale``, so the random draft
  agrees with the random target often but not always, as a distilled draft would. No eos: every answer has
  ``--max-new-tokens`` (28) tokens.

Rows (one run, interleaved repeats, 1 torch thread, medians): the draft reads (a) the target's visual tokens
(proxy: the RGB video through the draft's own tower, the setting the proxy draft was distilled in),
(b) those tokens plus Gaussian noise of --noise times their std (an "aligned events" stand-in), (c) unrelated
tokens (proxy: another window's; stand-in: random). Each row: target-alone ms, speculative ms (the draft's
prefill counted), measured speedup, alpha, gamma, measured cost ratio c, Leviathan's implied improvement; the
output is checked identical to the target's greedy output for every prompt. A last line times transformers'
assisted generation with the draft's own visual tokens (:func:`modeling_evalign.downstream.speedup.assisted_generate`)
on row (a). For a real VLM use ``python -m modeling_evalign.downstream.harness``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from modeling_evalign.downstream.generation import greedy_answers
from modeling_evalign.downstream.speedup import assisted_generate, measure_speedup
from modeling_evalign.downstream.visual import visual_inputs_embeds

FRAMES, PER_FRAME, TOWER, VOCAB, VIDEO_ID = 5, 26, 128, 1000, 999


@dataclass
class Setup:
    description: str
    target: torch.nn.Module
    draft: torch.nn.Module
    ids: torch.Tensor  # [N, L] prompts (shared layout)
    target_features: torch.Tensor  # [N, F, T, D] tower tokens the target reads
    conditions: dict[str, torch.Tensor]  # row name -> tower tokens the draft reads
    eos: int | None
    max_new_tokens: int


# ---------------------------------------------------------------------------------------------- stand-ins


def build_standins(hidden: int, layers: int, residual_scale: float, seed: int = 0):
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


def standin_setup(args) -> Setup:
    target, draft = build_standins(args.hidden, args.target_layers, args.residual_scale)
    for model in (target, draft):  # no EOS: every answer has --max-new-tokens tokens (a long caption)
        model.generation_config.eos_token_id = None
    gen = torch.Generator().manual_seed(0)
    ids = torch.stack([
        torch.cat([torch.tensor([1]), torch.full((FRAMES * PER_FRAME,), VIDEO_ID),
                   torch.randint(3, VOCAB - 2, (12,), generator=gen)])
        for _ in range(args.prompts)
    ])
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(args.prompts, FRAMES, PER_FRAME, TOWER, generator=gen)
    conditions = {
        "(a) target's visual tokens": feats,
        f"(b) + {args.noise} std noise": feats + args.noise * torch.randn(feats.shape, generator=gen),
        "(c) unrelated (random) tokens": torch.randn(feats.shape, generator=gen),
    }
    n = args.max_new_tokens or 28
    text = (f"target: random VideoLlava stand-in, decoder hidden {args.hidden} x {args.target_layers} layers; draft: "
            f"its first layer; prompt {ids.shape[1]} tokens ({FRAMES}x{PER_FRAME} visual); {n} new tokens, no eos")
    return Setup(text, target, draft, ids, feats, conditions, None, n)


# ---------------------------------------------------------------------------------------------- proxy VLM


def proxy_setup(args, build: bool) -> Setup | None:
    from transformers import AutoTokenizer, VideoLlavaForConditionalGeneration

    from modeling_evalign.downstream import proxy_vlm
    from modeling_evalign.downstream.prompts import encode_prompt
    from modeling_evalign.downstream.proxy_vlm_data import grid_windows, render_sequences
    from modeling_evalign.downstream.questions import QUESTIONS
    from modeling_evalign.downstream.visual import tower_features
    from modeling_evalign.features.clip_preprocessing import clip_preprocess_tensor
    from modeling_evalign.features.proxy_clip import ensure_proxy_clip

    path = Path(args.proxy_dir) if args.proxy_dir else proxy_vlm.proxy_vlm_dir(ensure_proxy_clip())
    if not (path / proxy_vlm.INFO_FILE).is_file():
        if args.proxy_dir:
            raise SystemExit(f"--proxy-dir {path}: no {proxy_vlm.INFO_FILE} (not a built proxy VLM)")
        if not build:
            return None
        with torch.enable_grad():  # it trains; main() runs under no_grad
            path = proxy_vlm.ensure_proxy_vlm(ensure_proxy_clip())
    info = json.loads((path / proxy_vlm.INFO_FILE).read_text())
    cfg = proxy_vlm.ProxyVlmConfig(**info["config"])
    target = VideoLlavaForConditionalGeneration.from_pretrained(path / "target").eval()
    draft = VideoLlavaForConditionalGeneration.from_pretrained(path / "draft").eval()
    tokenizer = AutoTokenizer.from_pretrained(path / "target")

    seqs = render_sequences(cfg.photos, "test", cfg.test_sequences_per_photo, cfg.seconds, cfg.frame_rate_hz,
                            tuple(cfg.render_size), cfg.seed)
    windows = grid_windows(seqs, args.duration, cfg.num_frames, qtypes=("caption",))
    if len(windows) < args.prompts:
        raise SystemExit(f"only {len(windows)} held-out caption windows of {args.duration} s: lower --prompts")
    step = len(windows) / args.prompts  # spread over sequences (photographs and camera paths)
    windows = [windows[int(i * step)] for i in range(args.prompts)]
    frames = torch.stack([seqs.frames[w.seq, list(w.frames)] for w in windows])  # [N, F, 3, H, W] uint8
    size = int(target.config.vision_config.image_size)
    px = clip_preprocess_tensor(frames.flatten(0, 1).float() / 255.0, size).reshape(*frames.shape[:2], 3, size, size)
    with torch.no_grad():
        target_feats = tower_features(target, px, "video")
        draft_feats = tower_features(draft, px, "video")  # the draft's own tower (same CLIP weights)
    gen = torch.Generator().manual_seed(1)
    noisy = draft_feats + args.noise * draft_feats.std(dim=(0, 1, 2), keepdim=True) * torch.randn(
        draft_feats.shape, generator=gen)
    conditions = {
        "(a) RGB video, draft's own tower": draft_feats,
        f"(b) + {args.noise} std noise": noisy,
        "(c) another window's video": draft_feats.roll(args.prompts // 2, dims=0),
    }
    ids = encode_prompt(tokenizer, QUESTIONS["caption"], "video", int(target.config.video_seq_length))
    ids = ids.expand(args.prompts, -1)
    t_text, d_text = target.config.text_config, draft.config.text_config
    n = args.max_new_tokens or cfg.max_new_tokens
    text = (f"proxy VLM {path.name}: target decoder {t_text.hidden_size} x {t_text.num_hidden_layers} layers, "
            f"draft {d_text.hidden_size} x {d_text.num_hidden_layers}; caption question on {args.prompts} held-out "
            f"{args.duration} s windows; prompt {ids.shape[1]} tokens ({target.config.video_seq_length} visual); "
            f"up to {n} new tokens, eos {tokenizer.eos_token_id}")
    return Setup(text, target, draft, ids, target_feats, conditions, tokenizer.eos_token_id, n)


# ---------------------------------------------------------------------------------------------- measurement


@torch.no_grad()
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", choices=("auto", "proxy", "standin"), default="auto")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the proxy's budget / 28 (stand-in)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--proxy-dir", default=None, help="a built proxy VLM directory (default: ensure_proxy_vlm's)")
    p.add_argument("--duration", type=float, default=1.0, help="proxy: window length (s)")
    p.add_argument("--noise", type=float, default=0.1, help="std of row (b)'s noise (x token std)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--target-layers", type=int, default=8)
    p.add_argument("--residual-scale", type=float, default=0.05)
    p.add_argument("--gamma", default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--output", default=None, help="JSON file for the rows")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    device = torch.device(args.device)
    gamma = None if args.gamma == "auto" else int(args.gamma)
    setup = None if args.models == "standin" else proxy_setup(args, build=args.models == "proxy")
    if setup is None:
        if args.models == "auto":
            print("proxy VLM not built (--models proxy builds it): random stand-ins")
        setup = standin_setup(args)
    target, draft = setup.target.to(device), setup.draft.to(device)
    ids, n = setup.ids.to(device), setup.max_new_tokens
    te = visual_inputs_embeds(target, ids, video_features=setup.target_features.to(device))
    print(f"{setup.description}; {args.prompts} prompts x {args.repeats} interleaved repeats; "
          f"{args.threads} thread(s), {device}")
    print(f"{'draft reads':<34} {'target ms':>9} {'spec ms':>8} {'speedup':>7} {'alpha':>6} {'gamma':>5} "
          f"{'c':>5} {'implied':>7} {'tokens':>6} {'identical':>9}")
    rows = {}
    for name, draft_feats in setup.conditions.items():
        de = visual_inputs_embeds(draft, ids, video_features=draft_feats.to(device))
        r = measure_speedup(target, te, draft, de, gamma, n, setup.eos, args.repeats, num_threads=args.threads)
        rows[name] = r
        print(f"{name:<34} {r.target_ms:>9.1f} {r.speculative_ms:>8.1f} {r.speedup:>6.2f}x {r.alpha:>6.3f} "
              f"{r.gamma:>5} {r.cost_ratio:>5.3f} {r.implied_speedup:>6.2f}x {r.mean_new_tokens:>6.1f} "
              f"{str(r.tokens_identical):>9}")
    # transformers' assisted generation with the draft's own visual tokens (prefill hook), same prompts, row (a)
    name = next(iter(setup.conditions))
    g = rows[name].gamma
    answers = greedy_answers(target, te, n, setup.eos)
    times, same = [], True
    for _ in range(args.repeats):
        per = []
        for i in range(args.prompts):
            t0 = time.perf_counter()
            out = assisted_generate(target, copy.copy(draft), ids[i : i + 1],
                                    target_video_features=setup.target_features[i : i + 1].to(device),
                                    draft_video_features=setup.conditions[name][i : i + 1].to(device),
                                    gamma=g, max_new_tokens=n)
            per.append(time.perf_counter() - t0)
            same &= out.tolist() == answers[i]
        times.append(per)
    hf_ms = 1e3 * statistics.fmean(statistics.median(t[i] for t in times) for i in range(args.prompts))
    print(f"transformers assisted generate, row (a), gamma {g}: {hf_ms:.1f} ms per prompt "
          f"({rows[name].target_ms / hf_ms:.2f}x vs the target-alone loop; identical {same})")
    if args.output:
        from modeling_evalign.utils.io_utils import atomic_write_text

        out = {"setup": setup.description, "rows": {k: r.to_dict() for k, r in rows.items()},
               "assisted_ms": hf_ms, "assisted_identical": same}
        atomic_write_text(args.output, json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
