"""The real-model speculative harness on tiny VideoLlava checkpoints saved to disk (offline)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tiny_vlm import EOS, TOKENS, VIDEO_ID, pixels, tiny_video_llava

from modeling_evalign.downstream.generation import greedy_answers, trace_acceptance
from modeling_evalign.downstream.harness import PROG, encode_video_prompt, main
from modeling_evalign.downstream.visual import tower_features, visual_inputs_embeds
from modeling_evalign.lightweight.configuration_lightweight import LightweightAlignmentConfig
from modeling_evalign.lightweight.modeling_lightweight import LightweightAlignmentModel
from modeling_evalign.utils.cli import run_cli

ROOT = Path(__file__).resolve().parents[1]
FRAMES, N = 3, 3
QUESTION = "what does the video show"
BUDGET = 10


def _tokenizer():
    """A word-level fast tokenizer whose ids match tiny_vlm: <pad> 0, <s> 1, </s> 2, <video> 63."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["USER:", "ASSISTANT:", *QUESTION.split(), "describe", "it"]
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{w: 3 + i for i, w in enumerate(words)}, "<image>": 62, "<video>": 63}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<pad>")
    fast.add_special_tokens({"additional_special_tokens": ["<image>", "<video>"]})
    return fast


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("harness")
    torch.manual_seed(0)
    target = tiny_video_llava(seed=0, frames=FRAMES)
    draft = tiny_video_llava(hidden=32, layers=1, seed=5, frames=FRAMES)
    tokenizer = _tokenizer()
    for name, model in (("target", target), ("draft", draft)):
        model.save_pretrained(tmp / name)
        tokenizer.save_pretrained(tmp / name)
    gen = torch.Generator().manual_seed(1)
    alignment = LightweightAlignmentModel(LightweightAlignmentConfig(
        event_dim=24, target_dim=32, source_grid=[5, 5], target_grid=[4, 4])).eval()
    alignment.save_pretrained(tmp / "alignment")
    events = torch.randn(N, FRAMES, 26, 24, generator=gen)  # 5x5 event patches + CLS, width 24
    px = pixels(N, "video", frames=FRAMES, seed=2)
    save_file({"event_tokens": events}, str(tmp / "events.safetensors"))
    save_file({"pixel_values_videos": px}, str(tmp / "rgb.safetensors"))
    torch.save({"video_features": tower_features(target, px, "video")}, tmp / "rgb_features.pt")
    save_file({"event_tokens": torch.randn(N, FRAMES, TOKENS + 1, 32, generator=gen)}, str(tmp / "raw.safetensors"))
    return dict(tmp=tmp, target=target, draft=draft, tokenizer=tokenizer, alignment=alignment, events=events, px=px)


def _args(tmp, **over):
    args = dict(target=tmp / "target", draft=tmp / "draft", alignment=tmp / "alignment",
                events=tmp / "events.safetensors", rgb=tmp / "rgb.safetensors", question=QUESTION,
                **{"max-new-tokens": BUDGET, "gamma": 2, "repeats": 1, "output": tmp / "out.json"})
    args.update(over)
    return [x for k, v in args.items() for x in (f"--{k}", str(v))]


def test_harness_cli_equals_the_direct_api(files):
    tmp = files["tmp"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "modeling_evalign.downstream.harness", *_args(tmp)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads((tmp / "out.json").read_text())
    assert "alpha" in proc.stdout and "speedup" in proc.stdout
    assert out["tokens_identical"] is True and out["num_windows"] == N
    # the same numbers straight from the API
    target, draft, tokenizer = files["target"], files["draft"], files["tokenizer"]
    ids = encode_video_prompt(tokenizer, QUESTION, FRAMES * (TOKENS + 1), VIDEO_ID).expand(N, -1)
    with torch.no_grad():
        aligned = files["alignment"].align(files["events"].reshape(N * FRAMES, 26, 24)).reshape(N, FRAMES, 17, 32)
    te = visual_inputs_embeds(target, ids, video_features=tower_features(target, files["px"], "video"))
    de = visual_inputs_embeds(draft, ids, video_features=aligned)
    answers = greedy_answers(target, te, BUDGET, EOS)
    traces = trace_acceptance(draft, de, answers, 2, EOS, max_new_tokens=BUDGET)
    accepted = sum(sum(t.accepted_per_round) for t in traces)
    drafted = sum(sum(t.drafted_per_round) for t in traces)
    question = out["questions"][QUESTION]
    assert question["alpha"] == pytest.approx(accepted / drafted)
    assert question["gamma"] == 2 and question["mean_new_tokens"] == pytest.approx(sum(map(len, answers)) / N)
    assert out["speedup"] == pytest.approx(out["target_ms"] / out["speculative_ms"])


def test_harness_target_features_and_unaligned(files, capsys):
    tmp = files["tmp"]
    assert main(_args(tmp, rgb=tmp / "rgb_features.pt", alignment="none", events=tmp / "raw.safetensors",
                      gamma="auto", output=tmp / "raw.json")) == 0
    out = json.loads((tmp / "raw.json").read_text())
    assert out["tokens_identical"] is True and out["questions"][QUESTION]["gamma_chosen"] is True


@pytest.mark.parametrize("over, message", [
    (dict(draft="/nonexistent/draft"), "--draft /nonexistent/draft: no such directory"),
    (dict(events="/nonexistent/e.safetensors"), "--events /nonexistent/e.safetensors: no such file"),
    (dict(alignment="none"), r"event_tokens \(unaligned\) has shape \(3, 3, 26, 24\): expected \[N, 3, 17, 32\]"),
    (dict(gamma="zero"), "--gamma 'zero' is invalid"),
])
def test_harness_bad_inputs_one_line_exit_2(files, over, message, capsys):
    import re

    assert run_cli(main, _args(files["tmp"], **over), prog=PROG) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{PROG}: error:")
    assert re.search(message, lines[0]), lines[0]
