"""Strategy selection: thresholds at their boundaries, alternatives, validation, printing."""

from __future__ import annotations

import pytest

from modeling_evalign.selection import (
    STRATEGY_PROFILES,
    StrategyRecommendation,
    auto_select_alignment_strategy,
    format_strategy_recommendation,
    print_strategy_recommendation,
)


@pytest.mark.parametrize(
    ("pairs", "target", "expected"),
    [
        (999, "good", "reconstruction"),
        (1000, "good", "lightweight"),
        (1000, "best", "lightweight"),
        (4999, "best", "lightweight"),
        (5000, "fast", "lightweight"),
        (5000, "good", "contrastive"),
        (5000, "best", "contrastive"),
        (9999, "best", "contrastive"),
        (10000, "fast", "lightweight"),
        (10000, "good", "contrastive"),
        (10000, "best", "triple_modal"),
        (1_000_000, "best", "triple_modal"),
    ],
)
def test_thresholds_at_boundaries(pairs, target, expected):
    rec = auto_select_alignment_strategy(True, pairs, has_e2vid=True, target_performance=target)
    assert rec.strategy == expected
    # the recommended strategy's minimum is met and the profile's numbers are reported
    assert STRATEGY_PROFILES[expected].min_pairs <= pairs
    assert rec.expected_latency == STRATEGY_PROFILES[expected].inference_latency
    assert rec.training_time == STRATEGY_PROFILES[expected].training_time
    assert rec.reasons and expected not in rec.alternatives


def test_brief_thresholds_in_profiles():
    assert {k: p.min_pairs for k, p in STRATEGY_PROFILES.items()} == {
        "reconstruction": 0, "lightweight": 1000, "contrastive": 5000, "triple_modal": 10000
    }


def test_no_paired_data_recommends_reconstruction_and_warns_without_e2vid():
    with_ckpt = auto_select_alignment_strategy(False, 0, has_e2vid=True, target_performance="best")
    assert with_ckpt.strategy == "reconstruction" and not with_ckpt.warnings
    assert with_ckpt.data_requirement.startswith("0 paired samples")
    without = auto_select_alignment_strategy(False, 0, has_e2vid=False)
    assert without.strategy == "reconstruction"
    assert any("E2VID" in w for w in without.warnings)
    assert "lightweight" in without.alternatives


def test_alternatives_depend_on_data_and_checkpoint():
    rec = auto_select_alignment_strategy(True, 5000, has_e2vid=False, target_performance="good")
    assert set(rec.alternatives) == {"lightweight", "triple_modal"}
    assert "10,000" in rec.alternatives["triple_modal"]
    rec = auto_select_alignment_strategy(True, 20000, has_e2vid=True, target_performance="fast")
    assert set(rec.alternatives) == {"contrastive", "triple_modal", "reconstruction"}


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"data_size": -1}, ValueError, "data_size must be >= 0"),
        ({"data_size": 10.5}, TypeError, "data_size must be an int"),
        ({"target_performance": "great"}, ValueError, r"\['fast', 'good', 'best'\].*'great'"),
        ({"has_paired_data": "yes"}, TypeError, "has_paired_data must be a bool"),
        ({"has_e2vid": 1}, TypeError, "has_e2vid must be a bool"),
        ({"has_paired_data": True, "data_size": 0}, ValueError, "data_size=0"),
        ({"has_paired_data": False, "data_size": 10}, ValueError, "has_paired_data=False"),
    ],
)
def test_bad_inputs_raise(kwargs, exc, match):
    args = {"has_paired_data": True, "data_size": 5000, "has_e2vid": False, "target_performance": "good"}
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        auto_select_alignment_strategy(**args)


def test_print_is_readable(capsys):
    rec = auto_select_alignment_strategy(has_paired_data=True, data_size=5000, has_e2vid=False, target_performance="good")
    assert isinstance(rec, StrategyRecommendation)
    print_strategy_recommendation(rec)
    out = capsys.readouterr().out
    assert out.startswith("Recommended alignment strategy: contrastive\n")
    assert "5,000" in out and "1-2 days" in out and "~1 ms" in out and "alternatives:" in out
    assert out.strip() == format_strategy_recommendation(rec)
    with pytest.raises(TypeError, match="StrategyRecommendation"):
        print_strategy_recommendation({"strategy": "x"})


def test_public_names_resolve_lazily():
    import modeling_evalign

    assert modeling_evalign.auto_select_alignment_strategy is auto_select_alignment_strategy
    assert modeling_evalign.StrategyRecommendation is StrategyRecommendation


def test_h2_modules_import_nothing_heavy():
    import subprocess
    import sys

    code = (
        "import sys, modeling_evalign.evaluation.metrics, modeling_evalign.selection, modeling_evalign.training.trainer, "
        "modeling_evalign.data.alignment_dataset, modeling_evalign.data.synthetic_features\n"
        "print(sorted(m for m in ('datasets', 'evaluate', 'h5py', 'peft', 'sklearn', 'matplotlib') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_docstrings_quote_the_measured_strategy_maps():
    """The crossovers quoted in selection.py are the ones in the committed reports' results.json (the pooled
    map and the token map)."""
    import json
    import re
    from pathlib import Path

    import modeling_evalign.selection as selection

    reports = Path(__file__).resolve().parents[1] / "reports"
    pooled, tokens = reports / "strategy_map_pooled" / "results.json", reports / "strategy_map" / "results.json"
    if not (pooled.is_file() and tokens.is_file()):
        pytest.skip(f"{pooled} or {tokens} is not in this checkout")
    doc = " ".join(selection.__doc__.split())

    def crossings(path, duration):
        data = json.loads(path.read_text())
        return {(r["a"], r["b"]): r for r in data["crossovers"] if r["duration"] == duration and r["metric"] == "mean/R@1"}

    rows = crossings(pooled, "1s")
    for (a, b), phrase in ((("closed_form", "lightweight"), r"crosses the lightweight adapter at (\d+) pairs"),
                           (("closed_form", "contrastive"), r"overtakes contrastive at (\d+)"),
                           (("closed_form", "triple_modal"), r"and triple_modal at (\d+)")):
        quoted = int(re.search(phrase, doc).group(1))
        assert [round(c["pairs"]) for c in rows[(a, b)]["crossovers"]] == [quoted]
    assert rows[("lightweight", "contrastive")]["ahead_throughout"] == "lightweight"
    assert "528 pairs" in " ".join(selection.auto_select_alignment_strategy.__doc__.split())
    # the token map: contrastive ahead of every other strategy throughout, at both durations
    for duration in ("1s", "200ms"):
        rows = crossings(tokens, duration)
        for other in ("closed_form", "lightweight", "triple_modal"):
            pair = (other, "contrastive") if (other, "contrastive") in rows else ("contrastive", other)
            assert rows[pair]["crossovers"] == [] and rows[pair]["ahead_throughout"] == "contrastive"
    quoted = int(re.search(r"they cross at (\d+) pairs at 1s", doc).group(1))
    assert [round(c["pairs"]) for c in crossings(tokens, "1s")[("closed_form", "lightweight")]["crossovers"]] == [quoted]
    sizes = json.loads(tokens.read_text())["sizes"]["1s"]
    assert min(sizes) == selection.TOKEN_MIN_PAIRS


def test_token_features_use_the_measured_thresholds():
    from modeling_evalign.selection import TOKEN_MIN_PAIRS

    assert auto_select_alignment_strategy(True, TOKEN_MIN_PAIRS, features="tokens").strategy == "contrastive"
    assert auto_select_alignment_strategy(True, 120, features="tokens", target_performance="fast").strategy == "lightweight"
    low = auto_select_alignment_strategy(True, TOKEN_MIN_PAIRS - 1, features="tokens")
    assert low.strategy == "reconstruction" and low.warnings
    assert auto_select_alignment_strategy(True, 120).strategy == "reconstruction"  # pooled: the brief's 1,000
    with pytest.raises(ValueError, match="features must be one of"):
        auto_select_alignment_strategy(True, 120, features="patches")
