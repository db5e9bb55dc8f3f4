"""The closed question set of the proxy vision-language model and its ground truth from the generator's metadata.

A window ``[t0, t1]`` of one synthetic sequence (a photograph under a :class:`CameraMotion`, as
``evalign_synthetic.json`` records it) gets up to four questions (:data:`QUESTION_TYPES`):

- ``scene``: what the photograph shows: its class label (``"cat"``, ``"cup of coffee"``); always asked.
- ``motion``: the pan direction of the view centre over the window, ``"left"``/``"right"``/``"up"``/``"down"``,
  from ``pose(t1) - pose(t0)`` measured in view heights (the centre's shift in photo fractions divided by the view
  height at ``t0``: how far the picture slides across the frame). The view centre moving right in the photograph
  is the camera panning right (the content slides left in the frame). Not asked (``None``) when the larger axis
  moves less than :data:`PAN_MIN` (2.5% of the view height) or the smaller axis moves more than
  :data:`AXIS_RATIO_MAX` (0.5) times the larger one (diagonal: no single direction is right).
- ``zoom``: ``"in"`` when the view height shrinks over the window (the picture grows), ``"out"`` when it grows, from
  ``z = ln(view_height(t1) / view_height(t0))``; not asked when ``|z| <`` :data:`ZOOM_MIN` (0.025).
- ``caption``: a long templated sentence (~25 word tokens) built from the scene, the pan direction and a three-way
  zoom state, e.g. ``"the video shows the cat . the camera moves to the left and zooms in , so the cat drifts to
  the right and grows larger ."``. Long on purpose: speculative decoding needs a long answer to speed up. Asked
  only where every part it states is unambiguous: the pan is clear (as for ``motion``) and the zoom is either
  clear (``|z| >= ZOOM_MIN``: "zooms in"/"zooms out") or clearly absent (``|z| <`` :data:`ZOOM_STILL` = 0.01:
  "keeps its zoom"); in between the caption is not asked.

Visibility (measured by ``benchmarks/bench_vlm_motion_probe.py`` on the proxy CLIP tower, held-out camera paths):
the thresholds above are where the *frames* show the answer, not where the 80-px tower does. On the frames' 16-px
patch-mean colours a shift-matching probe names the pan direction 75-86% of the time from 1-12 px of pan and
91-92% from 12 px (0.15 view heights); on the tower's tokens no magnitude reaches that (last-minus-first tokens
31-61%, token shift-matching 25-71%, chance 25%). No threshold makes the pan visible to this tower: 0.15 view
heights would leave no 0.2 s window (p90 pan 3.8 px) and ~29% of 1 s windows, and the tower still misses most of
those. :data:`PAN_MIN` therefore stays at the frames' level; the fix is a position-sensitive tower or a faster camera.

Answers are lower-case word sequences with spaced punctuation, so a word-level tokenizer covers them exactly
(:func:`all_texts` lists every text the model can see or say).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

from ..events.scenes import CameraMotion

__all__ = [
    "AXIS_RATIO_MAX",
    "PAN_MIN",
    "QUESTIONS",
    "QUESTION_TYPES",
    "ZOOM_MIN",
    "ZOOM_STILL",
    "all_texts",
    "answer_choices",
    "as_motion",
    "caption_text",
    "window_answers",
]

QUESTION_TYPES: tuple[str, ...] = ("scene", "motion", "zoom", "caption")
QUESTIONS: dict[str, str] = {
    "scene": "What does the scene show?",
    "motion": "Which way does the camera move?",
    "zoom": "Does the camera zoom in or out?",
    "caption": "Describe the video.",
}
PAN_MIN = 0.025  # view heights the centre must move over the window for a pan direction to be asked
AXIS_RATIO_MAX = 0.5  # smaller / larger axis displacement above which the direction is ambiguous
ZOOM_MIN = 0.025  # |ln(view height ratio)| for a zoom direction to be asked
ZOOM_STILL = 0.01  # |ln(view height ratio)| below which the caption says the zoom is unchanged

PAN_DIRECTIONS = ("left", "right", "up", "down")
_OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
_ZOOM_PHRASES = {  # zoom state -> (camera phrase, what the subject does)
    "in": ("zooms in", "grows larger"),
    "out": ("zooms out", "grows smaller"),
    "none": ("keeps its zoom", "keeps its size"),
}


def as_motion(motion: CameraMotion | Mapping) -> CameraMotion:
    """A :class:`CameraMotion` from itself or from its ``to_dict()`` form (as ``evalign_synthetic.json`` stores it)."""
    if isinstance(motion, CameraMotion):
        return motion
    if not isinstance(motion, Mapping):
        raise TypeError(f"motion must be a CameraMotion or its dict, got {type(motion).__name__}")
    fields = set(CameraMotion.__dataclass_fields__)
    unknown = sorted(set(motion) - fields)
    if unknown:
        raise ValueError(f"motion dict has unknown fields {unknown}; expected a subset of {sorted(fields)}")
    return CameraMotion(**{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in motion.items()})


def _pan(dx: float, dy: float) -> str | None:
    big, small = max(abs(dx), abs(dy)), min(abs(dx), abs(dy))
    if big < PAN_MIN or small > AXIS_RATIO_MAX * big:
        return None
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def _zoom_state(z: float) -> str | None:
    if abs(z) >= ZOOM_MIN:
        return "in" if z < 0 else "out"
    return "none" if abs(z) < ZOOM_STILL else None


def caption_text(label: str, pan: str, zoom_state: str) -> str:
    """The caption for a scene label, a pan direction and a zoom state (``"in"``, ``"out"`` or ``"none"``)."""
    if pan not in _OPPOSITE:
        raise ValueError(f"pan={pan!r}: expected one of {PAN_DIRECTIONS}")
    if zoom_state not in _ZOOM_PHRASES:
        raise ValueError(f"zoom_state={zoom_state!r}: expected one of {sorted(_ZOOM_PHRASES)}")
    camera, subject = _ZOOM_PHRASES[zoom_state]
    return (f"the video shows the {label} . the camera moves to the {pan} and {camera} , "
            f"so the {label} drifts to the {_OPPOSITE[pan]} and {subject} .")


def window_answers(motion: CameraMotion | Mapping, label: str, t0_s: float, t1_s: float) -> dict[str, str | None]:
    """Ground-truth answers ``{type: answer or None}`` for the window ``[t0_s, t1_s]`` (seconds on the motion's
    clock) of a sequence showing ``label`` under ``motion``; ``None`` = ambiguous there, not asked."""
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"label must be a non-empty string, got {label!r}")
    if not (math.isfinite(t0_s) and math.isfinite(t1_s) and t1_s > t0_s):
        raise ValueError(f"window [{t0_s}, {t1_s}] s: expected finite times with t1 > t0")
    cx, cy, vh, _ = as_motion(motion).pose(np.array([t0_s, t1_s], dtype=np.float64))
    dx, dy = (float(c[1] - c[0]) / float(vh[0]) for c in (cx, cy))
    z = math.log(float(vh[1]) / float(vh[0]))
    pan = _pan(dx, dy)
    zoom = _zoom_state(z)
    return {
        "scene": label,
        "motion": pan,
        "zoom": zoom if zoom in ("in", "out") else None,
        "caption": caption_text(label, pan, zoom) if pan is not None and zoom is not None else None,
    }


def answer_choices(labels: Iterable[str]) -> dict[str, list[str]]:
    """Every answer each question type can have for scenes ``labels`` (the per-type chance is 1 / their count
    for ``scene``, ``motion`` and ``zoom``)."""
    labels = list(labels)
    return {
        "scene": labels,
        "motion": list(PAN_DIRECTIONS),
        "zoom": ["in", "out"],
        "caption": [caption_text(lab, p, z) for lab in labels for p in PAN_DIRECTIONS for z in _ZOOM_PHRASES],
    }


def all_texts(labels: Iterable[str]) -> list[str]:
    """Every question and answer text for scenes ``labels`` (the tokenizer's closed vocabulary)."""
    choices = answer_choices(labels)
    return list(QUESTIONS.values()) + [a for answers in choices.values() for a in answers]
