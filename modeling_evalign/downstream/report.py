"""The downstream table of the main job's results.md (one formatter for rows and the speculative entries)."""

from __future__ import annotations

import math

ROW_KEYS = ("duration", "condition", "accuracy", "accuracy_by_type", "agreement", "alpha", "n")
SPECULATIVE_KEYS = ("speedup", "tokens_identical", "alpha", "gamma", "cost_ratio", "condition")


def _pct(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def format_downstream_table(rows: list[dict], speculative: dict[str, dict] | None = None,
                            seconds: dict[str, float] | None = None) -> str:
    """Markdown: accuracy (overall and per question type), agreement with rgb_video and alpha in percent, n;
    then one line per duration with the speculative-decoding measurement and the stage's time."""
    from .questions import QUESTION_TYPES

    order = {t: i for i, t in enumerate(QUESTION_TYPES)}  # the question set's order, however a JSON file sorted it
    types = sorted({t for r in rows for t in r["accuracy_by_type"]}, key=lambda t: (order.get(t, len(order)), t))
    head = ["duration", "condition", "accuracy"] + [f"acc/{t}" for t in types] + ["agreement", "alpha", "n"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["duration"], r["condition"], _pct(r["accuracy"])]
        cells += [_pct(r["accuracy_by_type"].get(t)) for t in types]
        cells += [_pct(r["agreement"]), _pct(r["alpha"]), str(r["n"])]
        lines.append("| " + " | ".join(cells) + " |")
    for duration, s in (speculative or {}).items():
        lines.append("")
        lines.append(f"[{duration}] speculative decoding, draft VLM reading {s['condition']} tokens vs the target on "
                     f"RGB video ({s.get('n', '?')} caption prompts): speedup {s['speedup']:.2f}x, tokens identical "
                     f"{s['tokens_identical']}, alpha {_pct(s['alpha'])}%, gamma {s['gamma']}, cost ratio "
                     f"{s['cost_ratio']:.3f}" + (f", Leviathan's implied {s['implied_speedup']:.2f}x"
                                                 if isinstance(s.get("implied_speedup"), float) else ""))
    for duration, sec in (seconds or {}).items():
        lines.append(f"[{duration}] downstream stage: {sec:.0f} s")
    return "\n".join(lines)
