"""The strategy map's report: best configuration per (duration, strategy, pairs), learning curves (PNG +
its data file), crossovers and the hyperparameter sweep, as one markdown page plus ``results.json``.

The numbers in the markdown tables are the numbers in ``learning_curves.png.json`` (percent, one decimal),
so a test can check the figure against the table.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .strategy_map_select import crossovers

CURVE_METRICS = ("e2t/R@1", "t2e/R@1", "mean/R@1")
_DIRECTION = {"e2t/R@1": "event -> RGB", "t2e/R@1": "RGB -> event", "mean/R@1": "mean of both"}


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _fmt_params(params: Mapping[str, float]) -> str:
    parts = []
    for k, v in params.items():
        if k == "width":
            parts.append("linear" if not v else f"width {int(v)}")
        else:
            parts.append(f"{k} {v:g}")
    return ", ".join(parts)


def learning_curves(best: Mapping[tuple[str, str, int], Mapping[str, Any]], durations: Sequence[str],
                    strategies: Sequence[str]) -> dict[str, dict[str, dict[str, list]]]:
    """``{duration: {strategy: {"pairs": [...], metric: [test values...]}}}`` from the selected runs."""
    out: dict[str, dict[str, dict[str, list]]] = {}
    for duration in durations:
        out[duration] = {}
        for strategy in strategies:
            keys = sorted(k for k in best if k[0] == duration and k[1] == strategy)
            if not keys:
                continue
            series: dict[str, list] = {"pairs": [k[2] for k in keys]}
            for m in CURVE_METRICS:
                series[m] = [best[k]["metrics"]["test"][m] for k in keys]
            out[duration][strategy] = series
    return out


def crossover_rows(curves: Mapping[str, Mapping[str, Mapping[str, list]]],
                   metrics: Sequence[str] = CURVE_METRICS,
                   n_test: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """Every pair of strategies per duration and metric: the interpolated crossovers (maybe none), the
    largest gap between the two curves and, with ``n_test``, two binomial standard errors of a difference
    of two R@1 values (``2 * sqrt(2 * p(1-p) / m)``, ``p`` the curves' mean, ``m`` the queries behind one
    value: ``n_test`` for one direction, ``2 n_test`` for the mean of both); a gap below it is noise."""
    rows = []
    for duration, per in curves.items():
        for (sa, ca), (sb, cb) in itertools.combinations(per.items(), 2):
            if ca["pairs"] != cb["pairs"]:
                continue
            for m in metrics:
                found = crossovers(ca["pairs"], ca[m], cb[m])
                name = {"a": sa, "b": sb}
                mean_a, mean_b = sum(ca[m]) / len(ca[m]), sum(cb[m]) / len(cb[m])
                gap = max(abs(x - y) for x, y in zip(ca[m], cb[m]))
                two_se = None
                if n_test:
                    p = (mean_a + mean_b) / 2
                    queries = n_test[duration] * (2 if m.startswith("mean/") else 1)
                    two_se = 2 * math.sqrt(2 * p * (1 - p) / queries)
                rows.append({"max_gap": gap, "two_se_diff": two_se,
                    "duration": duration, "metric": m, "a": sa, "b": sb,
                    "crossovers": [{**c, "leader_before": name[c["leader_before"]],
                                    "leader_after": name[c["leader_after"]]} for c in found],
                    "ahead_throughout": None if found else (sa if mean_a >= mean_b else sb),
                })
    return rows


def plot_learning_curves(curves: Mapping[str, Mapping[str, Mapping[str, list]]],
                         references: Mapping[str, Mapping[str, Mapping[str, float]]],
                         chance: Mapping[str, float], path: str | Path) -> Path:
    """One row of panels per duration (event -> RGB and RGB -> event R@1, percent, vs pairs on a log
    axis), one line per strategy; references (unaligned) dashed, chance dotted. Data beside the PNG."""
    from .plots import _pyplot, _save

    plt = _pyplot()
    durations = list(curves)
    fig, axes = plt.subplots(len(durations), 2, figsize=(10, 3.6 * len(durations)), squeeze=False)
    for row, duration in enumerate(durations):
        for col, metric in enumerate(CURVE_METRICS[:2]):
            ax = axes[row][col]
            for strategy, series in curves[duration].items():
                ax.plot(series["pairs"], [100 * v for v in series[metric]], marker="o", label=strategy)
            for name, ref in references.get(duration, {}).items():
                ax.axhline(100 * ref[metric], ls="--", color="grey", lw=1, label=name)
            ax.axhline(100 * chance[duration], ls=":", color="black", lw=1, label="chance")
            ax.set_xscale("log")
            ticks = sorted({p for series in curves[duration].values() for p in series["pairs"]})
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.minorticks_off()
            ax.set_xlabel("training pairs")
            ax.set_ylabel(f"test {metric} (%)")
            ax.set_title(f"{duration}: {_DIRECTION[metric]}")
            ax.grid(alpha=0.3)
            if row == 0 and col == 0:
                ax.legend(fontsize=8)
    fig.tight_layout()
    data = {"x": "training pairs", "y": "test R@1 (fraction)", "curves": curves,
            "references": {d: {n: {m: r[m] for m in CURVE_METRICS} for n, r in refs.items()}
                           for d, refs in references.items()},
            "chance": dict(chance)}
    return _save(fig, path, data)


def _best_table(best, durations, strategies) -> list[str]:
    lines = ["| duration | strategy | pairs | best config | selected on | sel. mean R@1 | test e2t R@1 | "
             "test t2e R@1 | test mean R@1 | test strict mean R@1 | test seq R@1 | epochs | fit s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for duration in durations:
        for strategy in strategies:
            for k in sorted(k for k in best if k[0] == duration and k[1] == strategy):
                r = best[k]
                t = r["metrics"]["test"]
                seq = pct(t["seq/R@1"]) if "seq/R@1" in t else "-"
                strict = pct(t["strict/mean/R@1"]) if "strict/mean/R@1" in t else "-"
                lines.append(f"| {duration} | {strategy} | {k[2]} | {_fmt_params(r['params'])} | {r['selected_on']} | "
                             f"{pct(r['_score'])} | {pct(t['e2t/R@1'])} | {pct(t['t2e/R@1'])} | {pct(t['mean/R@1'])} | "
                             f"{strict} | {seq} | {r['epochs']} | {r['seconds']:.1f} |")
    return lines


def _winners(curves) -> list[str]:
    lines = ["| duration | pairs | best strategy (test mean R@1) | runner-up |", "|---|---|---|---|"]
    for duration, per in curves.items():
        sizes = sorted({p for s in per.values() for p in s["pairs"]})
        for p in sizes:
            scores = sorted(((s["mean/R@1"][s["pairs"].index(p)], name) for name, s in per.items() if p in s["pairs"]),
                            reverse=True)
            second = f"{scores[1][1]} ({pct(scores[1][0])})" if len(scores) > 1 else "-"
            lines.append(f"| {duration} | {p} | {scores[0][1]} ({pct(scores[0][0])}) | {second} |")
    return lines


def _crossover_lines(rows, metric: str = "mean/R@1") -> list[str]:
    lines = [f"| duration | strategies | crossover ({metric}, pairs) | leader before -> after | largest gap | "
             "2 SE of a difference |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["metric"] != metric:
            continue
        pair = f"{r['a']} vs {r['b']}"
        noise = f"{pct(r['two_se_diff'])}" if r.get("two_se_diff") is not None else "-"
        tail = f" {pct(r['max_gap'])} | {noise} |"
        if not r["crossovers"]:
            lines.append(f"| {r['duration']} | {pair} | none in range | {r['ahead_throughout']} ahead throughout |{tail}")
        for c in r["crossovers"]:
            lines.append(f"| {r['duration']} | {pair} | {c['pairs']:.0f} (between {c['between'][0]} and "
                         f"{c['between'][1]}) | {c['leader_before']} -> {c['leader_after']} |{tail}")
    return lines


def _sweep_lines(records, durations, strategies) -> list[str]:
    lines = ["| duration | strategy | pairs | config | val mean R@1 | test mean R@1 |", "|---|---|---|---|---|---|"]
    for duration in durations:
        for strategy in strategies:
            rs = [r for r in records if r["duration"] == duration and r["strategy"] == strategy]
            if not rs:
                continue
            top = max(r["pairs"] for r in rs)
            for r in (r for r in rs if r["pairs"] == top):
                val = r["metrics"].get("validation", {}).get("mean/R@1")
                lines.append(f"| {duration} | {strategy} | {top} | {_fmt_params(r['params'])} | "
                             f"{pct(val) if val is not None else '-'} | {pct(r['metrics']['test']['mean/R@1'])} |")
    return lines


def _positive_rule(pad_us: float) -> str:
    base = ("`strict` R@1 counts only same-sequence windows overlapping the query's (DSEC's windows of one duration "
            "do not overlap: the pair itself); `seq R@1` any window of the same sequence.")
    if not pad_us:
        return "Retrieval positives (TimeWindows): same-sequence windows overlapping in time, i.e. " + base
    return (f"Retrieval positives (TimeWindows): same-sequence windows that overlap once each is widened by "
            f"{pad_us / 1e6:g} s on both sides (consecutive windows show nearly the same view: the camera moves "
            "little within a second), used for the curves, the selection and the crossovers; " + base)


def render_markdown(*, best, records, curves, crossover, references, chance, sizes, durations, strategies,
                    grids, settings, plot_name: str, command: str | None, elapsed_s: float | None,
                    notes: Sequence[str] = (), pad_us: float = 0.0, findings: str | None = None) -> str:
    n_test = {d: next(r["n"]["test"] for r in records if r["duration"] == d) for d in durations}
    n_val = {d: next(r["n"].get("validation", 0) for r in records if r["duration"] == d) for d in durations}
    out = ["# Strategy map: which alignment strategy at which data size", ""]
    if command:
        out += ["Produced by", "", "```", command, "```", ""]
    out += [f"{len(records)} runs ({len(durations)} durations x {len(strategies)} strategies x sizes x hyperparameters)"
            + (f", {elapsed_s / 60:.1f} min of wall time." if elapsed_s is not None else "."), "",
            "Protocol: training pairs are nested random subsets of the `train` split; the best hyperparameters per "
            "(duration, strategy, pairs) are chosen on `validation` mean R@1 and reported on `test`; every split holds "
            "whole sequences (the DSEC builder's split rule), so test scenes are seen from camera paths never trained "
            "on. " + _positive_rule(pad_us) + " R@1 in percent.", ""]
    out += ["| duration | train pairs available | sizes swept | validation windows | test windows | chance R@1 |",
            "|---|---|---|---|---|---|"]
    for d in durations:
        avail = next(r["n"]["train"] for r in records if r["duration"] == d)
        out.append(f"| {d} | {avail} | {', '.join(str(s) for s in sizes[d])} | {n_val[d]} | {n_test[d]} | "
                   f"{pct(chance[d])} |")
    if findings:
        out += ["", "## Findings", "", findings.strip()]
    if references:
        out += ["", "Untrained reference on test (no pairs): " + "; ".join(
            f"{d} {name} mean R@1 {pct(r['mean/R@1'])}" for d, refs in references.items() for name, r in refs.items())]
    out += ["", "## Learning curves", "", f"![learning curves]({plot_name})", "",
            f"Data: [`{plot_name}.json`]({plot_name}.json) (the same numbers as the table below).", "",
            "## Best configuration per strategy and data size", ""] + _best_table(best, durations, strategies)
    out += ["", "## Best strategy per size", ""] + _winners(curves)
    out += ["", "## Where the curves cross", "",
            "Crossovers are interpolated linearly in log(pairs) between the two sizes where the difference of the "
            "two curves changes sign. `largest gap`: the largest difference of the two curves over the sizes swept; "
            "`2 SE`: two binomial standard errors of a difference of two test R@1 values at the curves' level "
            "(a crossing whose largest gap is below it is within noise). All metrics (e2t, t2e, mean) are in "
            "`results.json`.", ""]
    out += _crossover_lines(crossover)
    out += ["", "## Hyperparameter sweep", "", "Grid (every combination per strategy, size and duration; each run "
            "in `runs.jsonl`): " + "; ".join(f"{s}: " + ", ".join(f"{k} {list(v)}" for k, v in grids[s].items())
                                              for s in strategies) + ".",
            f"Training: {settings.steps} optimizer steps aimed at per run (epochs = max({settings.min_epochs}, "
            f"ceil(steps / batches per epoch))), batch size {settings.batch_size}, seed {settings.seed}; AdamW with "
            "a cosine schedule (lightweight, contrastive), Adam with a cosine schedule (triple_modal).", "",
            "Every configuration at the largest size:", ""] + _sweep_lines(records, durations, strategies)
    if notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def parse_markdown_table(markdown: str, header_start: str) -> list[dict[str, str]]:
    """Rows of the first markdown table whose header line starts with ``header_start`` (for tests)."""
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(header_start):
            head = [c.strip() for c in line.strip("|").split("|")]
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append(dict(zip(head, (c.strip() for c in row.strip("|").split("|")))))
            return rows
    raise KeyError(f"no table starting with {header_start!r}")
