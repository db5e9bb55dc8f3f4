"""Ground truth of the downstream questions against hand computations from CameraMotion.pose, and the prompt format."""

import math

import numpy as np
import pytest

from modeling_evalign.downstream.prompts import (
    build_tokenizer,
    decode_answer,
    encode_answer,
    encode_prompt,
    format_prompt,
)
from modeling_evalign.downstream.questions import (
    PAN_MIN,
    QUESTION_TYPES,
    QUESTIONS,
    ZOOM_MIN,
    all_texts,
    answer_choices,
    window_answers,
)
from modeling_evalign.events.scenes import CameraMotion

STILL = {"pan_amplitude": (0.0, 0.0), "zoom_amplitude": 0.0, "rotation_amplitude_rad": 0.0}


def test_pan_directions_from_velocity():
    # view fraction 0.5: the centre moves |v| * 1 s / 0.5 view heights in 1 s
    for v, want in (((0.1, 0.0), "right"), ((-0.1, 0.0), "left"), ((0.0, 0.1), "down"), ((0.0, -0.1), "up")):
        a = window_answers(CameraMotion(view_fraction=0.5, velocity=v, **STILL), "cat", 2.0, 3.0)
        assert a["motion"] == want
        assert a["scene"] == "cat"
        assert a["zoom"] is None  # no zoom at all: not asked
        assert a["caption"].startswith(f"the video shows the cat . the camera moves to the {want} and keeps its zoom")


def test_ambiguous_pans_are_not_asked():
    # too small: 0.02 * 0.2 s / 0.5 = 0.008 view heights < PAN_MIN
    small = CameraMotion(view_fraction=0.5, velocity=(0.02, 0.0), **STILL)
    assert window_answers(small, "cat", 0.0, 0.2)["motion"] is None
    assert window_answers(small, "cat", 0.0, 0.2)["caption"] is None
    assert window_answers(small, "cat", 0.0, 1.0)["motion"] == "right"  # 0.04 view heights over 1 s
    # diagonal: axes too close
    diag = CameraMotion(view_fraction=0.5, velocity=(0.1, -0.08), **STILL)
    assert window_answers(diag, "cat", 0.0, 1.0)["motion"] is None
    assert window_answers(CameraMotion(view_fraction=0.5, velocity=(0.1, -0.04), **STILL), "cat", 0.0, 1.0)["motion"] == "right"


def test_sinusoidal_motion_matches_hand_computation():
    m = CameraMotion(view_fraction=0.6, pan_amplitude=(0.1, 0.05), pan_frequency_hz=(0.2, 0.3), pan_phase=(0.3, 1.0),
                     velocity=(0.01, -0.005), zoom_amplitude=0.15, zoom_frequency_hz=0.2)
    rng = np.random.default_rng(0)
    seen = set()
    for t0 in rng.uniform(0, 10, 60):
        for dur in (0.2, 1.0, 2.0):
            t1 = t0 + dur
            cx = [0.5 + 0.1 * math.sin(2 * math.pi * 0.2 * t + 0.3) + 0.01 * t for t in (t0, t1)]
            cy = [0.5 + 0.05 * math.sin(2 * math.pi * 0.3 * t + 1.0) - 0.005 * t for t in (t0, t1)]
            vh = [0.6 * (1 + 0.15 * math.sin(2 * math.pi * 0.2 * t)) for t in (t0, t1)]
            dx, dy = (cx[1] - cx[0]) / vh[0], (cy[1] - cy[0]) / vh[0]
            z = math.log(vh[1] / vh[0])
            a = window_answers(m.to_dict(), "cup of coffee", t0, t1)  # the JSON dict form
            big, small = max(abs(dx), abs(dy)), min(abs(dx), abs(dy))
            if big < PAN_MIN or small > 0.5 * big:
                want = None
            else:
                want = ("right" if dx > 0 else "left") if abs(dx) >= abs(dy) else ("down" if dy > 0 else "up")
            assert a["motion"] == want
            assert a["zoom"] == (None if abs(z) < ZOOM_MIN else ("in" if z < 0 else "out"))
            if a["caption"] is not None:
                assert want is not None and f"moves to the {want}" in a["caption"]
                zoom_words = "keeps its zoom" if abs(z) < 0.01 else ("zooms in" if z < 0 else "zooms out")
                assert zoom_words in a["caption"]
                assert 20 <= len(a["caption"].split()) <= 35
            seen.add((a["motion"], a["zoom"], a["caption"] is None))
    assert len(seen) >= 6  # the windows exercise several answers, None included


def test_bad_input():
    with pytest.raises(ValueError, match="t1 > t0"):
        window_answers(CameraMotion(), "cat", 1.0, 1.0)
    with pytest.raises(ValueError, match="unknown fields"):
        window_answers({"speed": 1.0}, "cat", 0.0, 1.0)
    with pytest.raises(ValueError, match="modality"):
        format_prompt("q", "audio", 3)


def test_prompt_token_counts_and_answer_round_trip(tmp_path):
    from transformers import AutoTokenizer

    labels = ["cat", "cup of coffee"]
    tok = build_tokenizer(all_texts(labels))
    tok.save_pretrained(tmp_path)
    tok2 = AutoTokenizer.from_pretrained(tmp_path)
    for t in (tok, tok2):
        for modality, n, name in (("video", 130, "<video>"), ("image", 25, "<image>")):
            for qt in QUESTION_TYPES:
                ids = encode_prompt(t, QUESTIONS[qt], modality, n)
                assert ids.shape[0] == 1 and ids[0, 0] == t.bos_token_id
                assert int((ids == t.convert_tokens_to_ids(name)).sum()) == n
                # <s> USER : <n placeholders> question words ASSISTANT :
                assert ids.shape[1] == 1 + 2 + n + len(t(QUESTIONS[qt], add_special_tokens=False).input_ids) + 2
        for answers in answer_choices(labels).values():
            for ans in answers:
                ids = encode_answer(t, ans)
                assert ids[-1] == t.eos_token_id and t.unk_token_id not in ids
                assert decode_answer(t, ids + [7, 8]) == ans
    with pytest.raises(ValueError, match="outside the tokenizer's vocabulary"):
        encode_answer(tok, "the dog")
