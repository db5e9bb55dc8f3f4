"""Speculative decoding of a real (or proxy) Video-LLaVA with an event draft: measured acceptance and speedup.

    python -m modeling_evalign.downstream.harness --target LanguageBind/Video-LLaVA-7B-hf \\
        --draft path/to/draft_vlm --alignment path/to/evalign_checkpoint \\
        --events event_tokens.safetensors --rgb rgb.safetensors \\
        --question "Describe the video." --max-new-tokens 32 --gamma auto \\
        --device cuda --dtype float16 --output speculative.json

Inputs (nothing about the 7B is hard-coded: frames and tokens per frame come from the target's config,
``video_seq_length / ((image_size / patch_size)^2 + 1)``; Video-LLaVA: 8 frames x 257 tokens of width 1024):

* ``--target``: a ``VideoLlavaForConditionalGeneration`` repo id or directory with its tokenizer.
* ``--draft``: a cheaper VLM of the same class reading the same prompt layout and token ids, whose projector
  takes the same tower width (the draft reads aligned event tokens through ITS OWN projector).
* ``--alignment``: an evalign checkpoint directory (``AutoModel``) mapping one event frame's tower tokens
  ``[T_e, D_e]`` to the target tower's ``[T, D]``; ``none`` feeds the raw event tokens (they must then already
  be ``[F, T, D]``): the unaligned baseline.
* ``--events``: a ``.safetensors``/``.pt`` file with ``event_tokens [N, F, T_e, D_e]`` (one row per window,
  e.g. EventGPT's 5 event frames through the event CLIP tower).
* ``--rgb``: a file with ``video_features [N, F, T, D]`` (the target tower's tokens of the RGB clip) or
  ``pixel_values_videos [N, F, 3, H, W]`` (preprocessed as the target's processor does; the target's own tower
  encodes them).

For each question the target answers every window greedily alone and with the draft (exact greedy
speculative decoding: identical tokens), interleaved; printed and written: alpha, tokens_identical, the
measured speedup, the cost ratio and Leviathan's implied improvement (:class:`.speedup.SpeedupResult`).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import torch

from ..utils.cli import ArgumentParser, CLIError, run_cli
from ..utils.io_utils import atomic_write_text

PROG = "python -m modeling_evalign.downstream.harness"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def encode_video_prompt(tokenizer: Any, question: str, num_visual_tokens: int, video_token_id: int) -> torch.Tensor:
    """``[1, L]`` ids of Video-LLaVA's prompt (:func:`.prompts.encode_prompt`) whose placeholders carry the
    target's ``video_token_id``."""
    from .prompts import encode_prompt

    ids = encode_prompt(tokenizer, question, "video", num_visual_tokens)
    if int((ids == video_token_id).sum()) != num_visual_tokens:
        raise ValueError(
            f"the tokenizer's '<video>' id is {tokenizer.convert_tokens_to_ids('<video>')} but the target's "
            f"video_token_id is {video_token_id}: the tokenizer does not belong to the target"
        )
    return ids


def load_tensor(path: str | Path, keys: tuple[str, ...], flag: str) -> tuple[str, torch.Tensor]:
    """The first of ``keys`` found in a ``.safetensors`` or ``.pt`` file (a dict of tensors)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{flag} {path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        data = load_file(str(path))
    else:
        data = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(data, dict):
        for key in keys:
            if key in data:
                return key, data[key]
    raise ValueError(f"{flag} {path} holds none of the tensors {list(keys)}: expected a dict with one of them")


def video_layout(config: Any) -> tuple[int, int, int]:
    """(frames, tokens per frame, tower width) of a VideoLlava config's video path."""
    from .visual import num_video_frames

    frames = num_video_frames(config)
    return frames, int(config.video_seq_length) // frames, int(config.vision_config.hidden_size)


def check_tokens(x: torch.Tensor, name: str, layout: tuple[int, int, int], n: int | None = None) -> None:
    frames, tokens, width = layout
    if x.dim() != 4 or tuple(x.shape[1:]) != (frames, tokens, width) or (n is not None and x.shape[0] != n):
        rows = n if n is not None else "N"
        raise ValueError(
            f"{name} has shape {tuple(x.shape)}: expected [{rows}, {frames}, {tokens}, {width}] "
            "(windows, frames, tokens per frame with CLS, tower width of the target's video path)"
        )


@torch.no_grad()
def align_event_tokens(alignment: Any, event_tokens: torch.Tensor, layout: tuple[int, int, int]) -> torch.Tensor:
    """``[N, F, T_e, D_e]`` event tokens -> ``[N, F, T, D]`` target tower tokens, one frame at a time."""
    if event_tokens.dim() != 4:
        raise ValueError(f"event_tokens has shape {tuple(event_tokens.shape)}: expected [N, F, T_e, D_e]")
    if alignment is None:
        check_tokens(event_tokens, "event_tokens (unaligned)", layout)
        return event_tokens
    n, f = event_tokens.shape[:2]
    param = next(alignment.parameters())
    flat = event_tokens.reshape(n * f, *event_tokens.shape[2:]).to(param.device, param.dtype)
    aligned = alignment.align(flat) if hasattr(alignment, "align") else alignment(flat).aligned_features
    if aligned.dim() != 3:
        raise ValueError(f"the alignment model returns {tuple(aligned.shape)} per frame: expected token features [T, D]")
    out = aligned.reshape(n, f, *aligned.shape[1:])
    check_tokens(out, "aligned event tokens", layout)
    return out


def run(
    target: Any,
    draft: Any,
    tokenizer: Any,
    questions: list[str],
    target_features: torch.Tensor,
    draft_features: torch.Tensor,
    *,
    gamma: int | None,
    max_new_tokens: int,
    repeats: int,
) -> dict[str, Any]:
    """The harness on loaded models and tower-space features ``[N, F, T, D]``: a JSON-ready dict."""
    from .speedup import measure_speedup
    from .visual import visual_inputs_embeds

    eos = target.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    n_visual = int(target.config.video_seq_length)
    if int(draft.config.video_seq_length) != n_visual or draft.config.video_token_id != target.config.video_token_id:
        raise ValueError(
            f"the draft's video prompt ({draft.config.video_seq_length} tokens of id {draft.config.video_token_id}) "
            f"differs from the target's ({n_visual} of id {target.config.video_token_id}): they must share the layout"
        )
    rows, per_question = [], {}
    for question in questions:
        ids = encode_video_prompt(tokenizer, question, n_visual, target.config.video_token_id)
        ids = ids.expand(target_features.shape[0], -1)
        t_embeds = visual_inputs_embeds(target, ids.to(target.device), video_features=target_features)
        d_embeds = visual_inputs_embeds(draft, ids.to(draft.device), video_features=draft_features)
        result = measure_speedup(target, t_embeds, draft, d_embeds, gamma, max_new_tokens, eos, repeats)
        rows.append(result)
        per_question[question] = result.to_dict()
    target_ms = statistics.fmean(r.target_ms for r in rows)
    spec_ms = statistics.fmean(r.speculative_ms for r in rows)
    weights = [r.mean_new_tokens * r.num_prompts for r in rows]
    return {
        "speedup": target_ms / spec_ms,
        "tokens_identical": all(r.tokens_identical for r in rows),
        "alpha": sum(r.alpha * w for r, w in zip(rows, weights)) / sum(weights),
        "target_ms": target_ms,
        "speculative_ms": spec_ms,
        "num_windows": int(target_features.shape[0]),
        "questions": per_question,
    }


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--target", required=True, help="VideoLlava repo id or directory (with its tokenizer)")
    p.add_argument("--draft", required=True, help="draft VLM directory (same prompt layout and token ids)")
    p.add_argument("--alignment", required=True, help="evalign checkpoint directory, or 'none' (unaligned)")
    p.add_argument("--events", required=True, help=".safetensors/.pt with event_tokens [N, F, T_e, D_e]")
    p.add_argument("--rgb", required=True, help=".safetensors/.pt with video_features [N, F, T, D] or pixel_values_videos")
    p.add_argument("--question", action="append", default=None,
                   help="question text (repeatable; default: the caption question, the longest answer)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--gamma", default="auto", help="tokens drafted per round, or 'auto'")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-windows", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--output", default=None, help="JSON file to write")
    args = p.parse_args(argv)
    gamma = None if args.gamma == "auto" else int(args.gamma) if args.gamma.isdigit() else None
    if args.gamma != "auto" and (gamma is None or gamma < 1):
        raise CLIError(f"--gamma {args.gamma!r} is invalid: expected an integer >= 1 or 'auto'")
    for flag, value in (("--draft", args.draft), ("--alignment", args.alignment)):
        if not (flag == "--alignment" and value == "none") and not Path(value).is_dir():
            raise FileNotFoundError(f"{flag} {value}: no such directory")
    if Path(args.target).exists() and not Path(args.target).is_dir():
        raise NotADirectoryError(f"--target {args.target}: expected a model directory or a Hub repo id")
    for flag, value in (("--events", args.events), ("--rgb", args.rgb)):
        if not Path(value).is_file():
            raise FileNotFoundError(f"{flag} {value}: no such file")

    from transformers import AutoTokenizer, VideoLlavaForConditionalGeneration
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # stderr keeps to errors: one line each

    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    target = VideoLlavaForConditionalGeneration.from_pretrained(args.target, dtype=dtype).to(device).eval()
    draft = VideoLlavaForConditionalGeneration.from_pretrained(args.draft, dtype=dtype).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.target)
    layout = video_layout(target.config)

    _, event_tokens = load_tensor(args.events, ("event_tokens",), "--events")
    key, rgb = load_tensor(args.rgb, ("video_features", "pixel_values_videos"), "--rgb")
    if args.max_windows is not None:
        event_tokens, rgb = event_tokens[: args.max_windows], rgb[: args.max_windows]
    if key == "pixel_values_videos":
        from .visual import tower_features

        rgb = tower_features(target, rgb.to(device, dtype), "video")
    check_tokens(rgb, f"--rgb {key}" if key == "video_features" else "the target tower's tokens of --rgb", layout)
    alignment = None
    if args.alignment != "none":
        from transformers import AutoModel  # the package import registered the evalign strategies

        alignment = AutoModel.from_pretrained(args.alignment).to(device).eval()
    aligned = align_event_tokens(alignment, event_tokens.to(device), layout)
    if aligned.shape[0] != rgb.shape[0]:
        raise ValueError(f"--events has {aligned.shape[0]} windows but --rgb {rgb.shape[0]}: expected the same windows")
    from .questions import QUESTIONS

    questions = args.question or [QUESTIONS["caption"]]  # the long answer: where speculative decoding pays
    out = run(target, draft, tokenizer, questions, rgb.to(device, dtype), aligned.to(device, dtype),
              gamma=gamma, max_new_tokens=args.max_new_tokens, repeats=args.repeats)
    out.update(target=args.target, draft=args.draft, alignment=args.alignment, device=str(device), dtype=args.dtype)
    print(f"alpha {out['alpha']:.3f}  tokens_identical {out['tokens_identical']}  speedup {out['speedup']:.2f}x  "
          f"({out['target_ms']:.1f} ms target alone, {out['speculative_ms']:.1f} ms speculative, "
          f"{out['num_windows']} windows x {len(questions)} questions)")
    if args.output:
        atomic_write_text(args.output, json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main, prog=PROG))
