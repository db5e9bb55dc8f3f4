"""Choosing the best run per (duration, strategy, pairs) and locating where two learning curves cross."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def select_best(records: Iterable[Mapping[str, Any]], metric: str = "mean/R@1") -> dict[tuple[str, str, int], dict]:
    """Best record per ``(duration, strategy, pairs)`` by ``metric`` on validation (test when a record has
    no validation split); ties keep the first run in sweep order."""
    best: dict[tuple[str, str, int], dict] = {}
    for r in records:
        split = "validation" if "validation" in r["metrics"] else "test"
        score = r["metrics"][split][metric]
        k = (r["duration"], r["strategy"], int(r["pairs"]))
        if k not in best or score > best[k]["_score"]:
            best[k] = {**r, "_score": score, "selected_on": split}
    return best


def crossovers(pairs: Sequence[float], a: Sequence[float], b: Sequence[float]) -> list[dict[str, Any]]:
    """Pair counts where curve ``a`` and curve ``b`` cross, interpolated linearly in ``log(pairs)``.

    With ``d_i = a_i - b_i`` changing sign strictly between sizes ``p_i`` and ``p_{i+1}``:
    ``t = d_i / (d_i - d_{i+1})`` and the crossover is ``exp(log p_i + t * (log p_{i+1} - log p_i))``.
    A run of exact ties between opposite signs puts the crossover at the first tied size. Each entry:
    ``{"pairs": float, "between": [p_i, p_j], "leader_before": "a"|"b", "leader_after": "a"|"b"}``.
    """
    if not len(pairs) == len(a) == len(b):
        raise ValueError(f"pairs, a and b must have equal lengths, got {len(pairs)}, {len(a)}, {len(b)}")
    if any(p <= 0 for p in pairs) or any(q >= r for q, r in zip(pairs, pairs[1:])):
        raise ValueError(f"pairs must be positive and strictly increasing, got {list(pairs)}")
    d = [x - y for x, y in zip(a, b)]
    nonzero = [i for i, v in enumerate(d) if v != 0]
    out = []
    for i, j in zip(nonzero, nonzero[1:]):
        if (d[i] > 0) == (d[j] > 0):
            continue
        if j == i + 1:
            t = d[i] / (d[i] - d[j])
            x = math.exp(math.log(pairs[i]) + t * (math.log(pairs[j]) - math.log(pairs[i])))
        else:
            x = float(pairs[i + 1])
        out.append({"pairs": x, "between": [pairs[i], pairs[j]],
                    "leader_before": "a" if d[i] > 0 else "b", "leader_after": "a" if d[j] > 0 else "b"})
    return out
