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
    if isinstance(value, int) or name == "n_test":
        return str(int(value))
    return f"{100 * value:.1f}" if "R@" in name else f"{value:.4f}"


def format_table(rows: list[StrategyRow], columns: tuple[str, ...] = COLUMNS) -> str:
    """The one results table (the main job's and the brief's script's): one row per (duration, strategy),
    ``columns`` of each row's metrics (counts as integers, recalls in percent), then its note."""
    head = "| duration | strategy | " + " | ".join(columns) + " | note |"
    lines = [head, "|" + "---|" * (len(columns) + 3)]
    for r in rows:
        cells = [_cell(c, r.metrics[c]) for c in columns]
        lines.append(f"| {r.duration} | {r.strategy} | " + " | ".join(cells) + f" | {r.note} |")
    return "\n".join(lines)


def chance_line(duration: str, n_test: int, n_sequences: int) -> str:
    return (f"[{duration}] chance: R@1 {100 / n_test:.1f}% (3x: {300 / n_test:.1f}%), seq/R@1 "
            f"{100 / n_sequences:.0f}% ({n_test} test windows from {n_sequences} sequences)")


def write_checkpoint_metrics(final, metrics: dict[str, float], split: str = "test") -> None:
    """Add the held-out metrics of the row to the checkpoint's ``training_info.json`` (``<split>_metrics``),
    beside the validation metrics training wrote with the same rule."""
    import json
    from pathlib import Path

    from ..training.finish import TRAINING_INFO_NAME
    from ..utils.io_utils import atomic_write_json

    path = Path(final) / TRAINING_INFO_NAME
    if path.is_file():
        info = json.loads(path.read_text())
        info[f"{split}_metrics"] = {k: v for k, v in metrics.items() if k != "n_test"}
        atomic_write_json(path, info)
