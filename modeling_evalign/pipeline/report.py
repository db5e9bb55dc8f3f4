"""Stage 5 of the main job: metrics of one row and the printed table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

COLUMNS = ("n_test", "e2t/R@1", "e2t/R@5", "e2t/R@10", "t2e/R@1", "t2e/R@5", "t2e/R@10", "mean/R@1", "seq/R@1",
           "cosine", "mse")


@dataclass
class StrategyRow:
    duration: str
    strategy: str
    metrics: dict[str, float]
    note: str = ""


def evaluate_features(event: torch.Tensor, target: torch.Tensor, groups: list[Any]) -> dict[str, float]:
    """Retrieval rows (already by the strategy's evaluation rule) scored by the one rule
    (``evaluation.scoring.score_rows``): strict retrieval both ways (a query's only positive is its own
    window), ``seq/R@1`` (any window of the same sequence counts), cosine and MSE; ``n_test`` = the number
    of test windows."""
    from ..evaluation.scoring import score_rows

    return {**score_rows(event, target, groups=groups), "n_test": len(event)}


def _cell(name: str, value: float) -> str:
    if name == "n_test":
        return str(int(value))
    return f"{100 * value:.1f}" if "R@" in name else f"{value:.4f}"


def format_table(rows: list[StrategyRow]) -> str:
    """Markdown table: one row per (duration, strategy); recalls in percent; zero-shot accuracy in the note."""
    head = "| duration | strategy | " + " | ".join(COLUMNS) + " | note |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 3)]
    for r in rows:
        cells = [_cell(c, r.metrics[c]) for c in COLUMNS]
        lines.append(f"| {r.duration} | {r.strategy} | " + " | ".join(cells) + f" | {r.note} |")
    return "\n".join(lines)


def chance_line(duration: str, n_test: int, n_sequences: int) -> str:
    return (f"[{duration}] chance: R@1 {100 / n_test:.1f}% (3x: {300 / n_test:.1f}%), seq/R@1 "
            f"{100 / n_sequences:.0f}% ({n_test} test windows from {n_sequences} sequences)")
