"""Strategy map: the sweep on tiny synthetic features, report vs plot data, crossovers, resume, CLI errors."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from modeling_evalign.data.alignment_dataset import AlignmentDataset
from modeling_evalign.data.synthetic_features import make_linear_pairs
from modeling_evalign.evaluation.strategy_map import crossovers, resolve_sizes, select_best
from modeling_evalign.evaluation.strategy_map_report import parse_markdown_table
from modeling_evalign.utils.cli import run_cli

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "dataset_scripts" / "strategy_map.py"
SCENES = ("astronaut", "coffee", "rocket")
SIZES = ["16", "32", "64", "128", "all"]


def _script():
    spec = importlib.util.spec_from_file_location("strategy_map_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_root(root: Path, seed: int, rows: dict[str, int], window_us: int) -> None:
    """train/validation/test feature directories, whole sequences per split, a scene label per sequence."""
    total = sum(rows.values())
    pairs = make_linear_pairs(total, 16, 8, noise=0.3, seed=seed)
    start = 0
    for s_i, (split, n) in enumerate(rows.items()):
        samples = []
        for i in range(n):
            seq = f"{split}_{i // 20:02d}"
            samples.append({"sequence": seq, "window_start_us": (i % 20) * window_us,
                            "window_end_us": (i % 20 + 1) * window_us, "scene": SCENES[(i // 20 + s_i) % 3]})
        ds = AlignmentDataset(pairs.event_features[start:start + n], pairs.target_features[start:start + n],
                              {"samples": samples})
        ds.save_to_directory(root / split)
        start += n


def _argv(tmp: Path, out: Path) -> list[str]:
    return ["--features", f"200ms={tmp / '200ms'}", f"1s={tmp / '1s'}", "--out", str(out),
            "--sizes", *SIZES, "--steps", "12", "--min-epochs", "1", "--batch-size", "16",
            "--grid", "lightweight.width=32", "lightweight.lr=3e-3", "contrastive.lr=3e-3",
            "contrastive.temperature=0.1", "contrastive.width=0", "triple_modal.lr=3e-3",
            "triple_modal.temperature=0.07", "triple_modal.width=0", "closed_form.ridge=0.1,10",
            "--tiny-text-tower", "--no-progress"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    threads = torch.get_num_threads()
    tmp = tmp_path_factory.mktemp("strategy_map")
    _write_root(tmp / "200ms", 0, {"train": 160, "validation": 40, "test": 60}, 200_000)
    _write_root(tmp / "1s", 1, {"train": 140, "validation": 40, "test": 40}, 1_000_000)
    out = tmp / "report"
    assert _script().main(_argv(tmp, out)) == 0
    yield tmp, out
    torch.set_num_threads(threads)  # the script sets one thread


def _curves(out: Path) -> dict:
    return json.loads((out / "learning_curves.png.json").read_text())["curves"]


def test_sweep_covers_sizes_strategies_durations(sweep):
    _, out = sweep
    records = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    # 2 durations x 5 sizes x (2 ridge points + 3 single-point strategies)
    assert len(records) == 2 * 5 * 5 == len({r["key"] for r in records})
    curves = _curves(out)
    assert set(curves) == {"200ms", "1s"}
    for duration, n_train in (("200ms", 160), ("1s", 140)):
        assert set(curves[duration]) == {"closed_form", "lightweight", "contrastive", "triple_modal"}
        for series in curves[duration].values():
            assert series["pairs"] == [16, 32, 64, 128, n_train]
    triple = [r for r in records if r["strategy"] == "triple_modal"]
    assert all("3 classes" in r["notes"] for r in triple)
    assert all(0 <= r["metrics"]["test"]["zero_shot_accuracy"] <= 1 for r in triple)


def test_report_table_matches_plot_data(sweep):
    _, out = sweep
    curves = _curves(out)
    rows = parse_markdown_table((out / "README.md").read_text(), "| duration | strategy | pairs | best config")
    assert len(rows) == 2 * 4 * 5
    for row in rows:
        series = curves[row["duration"]][row["strategy"]]
        i = series["pairs"].index(int(row["pairs"]))
        for metric, column in (("e2t/R@1", "test e2t R@1"), ("t2e/R@1", "test t2e R@1"),
                               ("mean/R@1", "test mean R@1")):
            assert row[column] == f"{100 * series[metric][i]:.1f}"
    results = json.loads((out / "results.json").read_text())
    assert results["curves"] == curves


def test_closed_form_record_against_independent_ridge_and_recall(sweep):
    """A run's numbers from scratch: the nested subset, ridge in numpy float64, R@1 by a slow loop."""
    tmp, out = sweep
    records = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    r = next(r for r in records if r["strategy"] == "closed_form" and r["duration"] == "1s" and r["pairs"] == 32
             and r["params"]["ridge"] == 0.1)
    train = AlignmentDataset.from_directory(tmp / "1s" / "train")
    test = AlignmentDataset.from_directory(tmp / "1s" / "test")
    idx = np.sort(np.random.default_rng(0).permutation(len(train))[:32])
    x, y = train.event_features.double().numpy()[idx], train.target_features.double().numpy()[idx]
    xm, ym = x.mean(0), y.mean(0)
    w = np.linalg.solve((x - xm).T @ (x - xm) + 0.1 * np.eye(x.shape[1]), (x - xm).T @ (y - ym))
    pred = (test.event_features.double().numpy() - xm) @ w + ym
    tgt = test.target_features.double().numpy()

    def r1(q, g):
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
        hits = 0
        for i in range(len(q)):
            s = g @ q[i]
            hits += sum(s[j] >= s[i] for j in range(len(g)) if j != i) == 0
        return hits / len(q)

    got = r["metrics"]["test"]
    assert got["e2t/R@1"] == pytest.approx(r1(pred, tgt))
    assert got["t2e/R@1"] == pytest.approx(r1(tgt, pred))
    assert got["mse"] == pytest.approx(float(((pred - tgt) ** 2).mean()), rel=1e-4)


def test_token_mode_maps_tokens_one_by_one_and_retrieves_flattened(tmp_path):
    """--tokens: [N, P, D] features stay tokens; closed_form is one ridge map for every token (numpy float64),
    retrieval compares the flattened layouts; every strategy (triple_modal in token mode) runs on them."""
    g = np.random.default_rng(3)
    w_true = g.normal(size=(8, 8))
    for split, n in (("train", 60), ("validation", 20), ("test", 20)):
        x = g.normal(size=(n, 3, 8))
        y = x @ w_true + 0.3 * g.normal(size=(n, 3, 8))
        samples = [{"sequence": f"{split}_{i // 10}", "window_start_us": (i % 10) * 10**6,
                    "window_end_us": (i % 10 + 1) * 10**6, "scene": SCENES[i % 3]} for i in range(n)]
        AlignmentDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32),
                         {"samples": samples}).save_to_directory(tmp_path / "1s" / split)
    out = tmp_path / "report"
    argv = ["--features", f"1s={tmp_path / '1s'}", "--tokens", "--out", str(out), "--sizes", "16", "all",
            "--steps", "6", "--min-epochs", "1", "--batch-size", "16", "--grid", "lightweight.width=0",
            "lightweight.lr=3e-3", "contrastive.lr=3e-3", "contrastive.temperature=0.1", "contrastive.width=0",
            "triple_modal.lr=3e-3", "triple_modal.temperature=0.07", "triple_modal.width=0",
            "closed_form.ridge=0.1", "--tiny-text-tower", "--no-progress"]
    threads = torch.get_num_threads()
    try:
        assert _script().main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    records = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert {r["strategy"] for r in records} == {"closed_form", "lightweight", "contrastive", "triple_modal"}
    r = next(r for r in records if r["strategy"] == "closed_form" and r["pairs"] == 60)
    train = AlignmentDataset.from_directory(tmp_path / "1s" / "train")
    test = AlignmentDataset.from_directory(tmp_path / "1s" / "test")
    x, y = train.event_features.double().numpy().reshape(-1, 8), train.target_features.double().numpy().reshape(-1, 8)
    xm, ym = x.mean(0), y.mean(0)
    w = np.linalg.solve((x - xm).T @ (x - xm) + 0.1 * np.eye(8), (x - xm).T @ (y - ym))
    pred = ((test.event_features.double().numpy() - xm) @ w + ym).reshape(len(test), -1)
    tgt = test.target_features.double().numpy().reshape(len(test), -1)
    q = pred / np.linalg.norm(pred, axis=1, keepdims=True)
    k = tgt / np.linalg.norm(tgt, axis=1, keepdims=True)
    r1 = np.mean([(k @ q[i]).argmax() == i for i in range(len(q))])
    assert r["metrics"]["test"]["e2t/R@1"] == pytest.approx(r1)
    assert r["metrics"]["test"]["mse"] == pytest.approx(float(((pred - tgt) ** 2).mean()), rel=1e-4)
    tm = next(r for r in records if r["strategy"] == "triple_modal" and r["pairs"] == 60)
    assert 0.0 <= tm["metrics"]["test"]["zero_shot_accuracy"] <= 1.0
    code = run_cli(_script().main, argv + ["--project", str(tmp_path)], prog="strategy_map.py")
    assert code == 2  # --tokens with --project: one line, exit 2


def test_resume_skips_finished_runs(sweep, tmp_path):
    tmp, out = sweep
    before = {json.loads(line)["key"]: json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()}
    removed = sorted(before)[:7]
    for key in removed:
        (out / "runs" / f"{key}.json").unlink()
    assert _script().main(_argv(tmp, out)) == 0
    results = json.loads((out / "results.json").read_text())
    assert (results["computed"], results["cached"]) == (7, len(before) - 7)
    after = {json.loads(line)["key"]: json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()}
    assert set(after) == set(before)
    for key in removed:  # seeded runs: retraining gives the same numbers
        assert after[key]["metrics"]["test"]["mean/R@1"] == pytest.approx(before[key]["metrics"]["test"]["mean/R@1"])


def test_crossover_interpolation_by_hand():
    # d = a - b = [-0.1, 0.05, 0.2]: sign change between 100 and 200, t = 0.1 / 0.15 = 2/3 in log space
    (c,) = crossovers([100, 200, 400], [0.1, 0.3, 0.5], [0.2, 0.25, 0.3])
    assert c["pairs"] == pytest.approx(100 * 2 ** (2 / 3))
    assert (c["leader_before"], c["leader_after"], c["between"]) == ("b", "a", [100, 200])
    # two crossings; one exact tie between opposite signs lands on the tied size
    # d = [0.1, 0, -0.1, 0.2]
    found = crossovers([10, 20, 40, 80], [0.5, 0.3, 0.1, 0.4], [0.4, 0.3, 0.2, 0.2])
    assert [f["pairs"] for f in found][0] == 20
    assert (found[0]["leader_before"], found[0]["leader_after"]) == ("a", "b")
    d2, d3 = -0.1, 0.2
    assert found[1]["pairs"] == pytest.approx(math.exp(math.log(40) + d2 / (d2 - d3) * math.log(2)))
    assert crossovers([1, 2, 4], [0.3, 0.4, 0.5], [0.1, 0.2, 0.3]) == []
    with pytest.raises(ValueError, match="strictly increasing"):
        crossovers([2, 1], [0, 1], [1, 0])


def test_selection_uses_validation_not_test():
    def rec(params, val, test):
        return {"duration": "1s", "strategy": "contrastive", "pairs": 100, "params": params,
                "metrics": {"validation": {"mean/R@1": val}, "test": {"mean/R@1": test}}}

    best = select_best([rec({"lr": 1}, 0.2, 0.9), rec({"lr": 2}, 0.5, 0.1), rec({"lr": 3}, 0.5, 0.8)])
    chosen = best[("1s", "contrastive", 100)]
    assert chosen["params"] == {"lr": 2} and chosen["selected_on"] == "validation"


def test_resolve_sizes_caps_and_dedupes():
    assert resolve_sizes([250, 500, 1000, 2000, 5000], 1100) == [250, 500, 1000, 1100]
    assert resolve_sizes(["all", 100], 700) == [100, 700]
    with pytest.raises(ValueError, match=">= 2"):
        resolve_sizes([1], 10)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--grid", "contrastive.bogus=1"], "contrastive has no parameter 'bogus'"),
        (["--grid", "contrastive.lr=abc"], "values must be numbers"),
        (["--sizes", "10", "x"], "'x' is not an int"),
        (["--sizes", "5s=10,20"], "duration '5s' is not one of"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--positive-pad-us", "-1"], "--positive-pad-us must be >= 0"),
        (["--findings", "/nonexistent/findings.md"], "--findings /nonexistent/findings.md does not exist"),
    ],
)
def test_bad_flags_exit_2_with_one_line(extra, match, tmp_path, capsys):
    argv = ["--features", f"1s={tmp_path / 'missing'}", "--out", str(tmp_path / "o"), *extra]
    assert run_cli(_script().main, argv, prog="strategy_map.py") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and match in err and "Traceback" not in err


def test_missing_features_exit_2(tmp_path, capsys):
    argv = ["--features", f"1s={tmp_path / 'missing'}", "--out", str(tmp_path / "o")]
    assert run_cli(_script().main, argv, prog="strategy_map.py") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and str(tmp_path / "missing") in err


@pytest.mark.slow
def test_unknown_flag_exits_2_from_the_command_line(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--pipeline-dir", str(tmp_path), "--out", str(tmp_path),
                           "--bogus"], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "--bogus" in proc.stderr and "Traceback" not in proc.stderr


def test_projection_maps_raw_features_into_image_embeds(tmp_path):
    """--project: raw last-layer features -> visual_projection(post_layernorm(x)) of the given CLIP tower."""
    from transformers import CLIPModel

    from modeling_evalign.evaluation.strategy_map import load_duration
    from modeling_evalign.features.tiny_models import tiny_clip_config

    torch.manual_seed(0)
    clip = CLIPModel(tiny_clip_config(hidden_size=16, num_heads=2, projection_dim=8)).eval()
    clip.save_pretrained(tmp_path / "clip")
    pairs = make_linear_pairs(30, 16, 16, seed=3)
    for split, rows in (("train", slice(0, 20)), ("test", slice(20, 30))):
        AlignmentDataset(pairs.event_features[rows], pairs.target_features[rows]).save_to_directory(tmp_path / "f" / split)
    transform, tid = _script()._projection(str(tmp_path / "clip"))
    data = load_duration("1s", tmp_path / "f", transform=transform, transform_id=tid)
    with torch.no_grad():
        want = clip.visual_projection(clip.vision_model.post_layernorm(pairs.event_features[:20]))
    torch.testing.assert_close(data.splits["train"].event_features, want)
    assert data.splits["test"].target_dim == 8 and "validation" not in data.splits
    assert data.fingerprint != load_duration("1s", tmp_path / "f").fingerprint


def test_widened_window_positives_and_chance_by_hand():
    """Windows [0,1) [1,2) [2,3) of one sequence + one window of another, widened by 0.5 on each side."""
    from modeling_evalign.evaluation.strategy_map import chance_r1, evaluate_split

    samples = [{"sequence": "a", "window_start_us": s, "window_end_us": s + 1} for s in (0, 1, 2)]
    samples.append({"sequence": "b", "window_start_us": 0, "window_end_us": 1})
    target = torch.eye(4)
    ds = AlignmentDataset(torch.zeros(4, 4), target, {"samples": samples})
    # positives per query: a0 {a0, a1}, a1 {a0, a1, a2}, a2 {a1, a2}, b0 {b0}
    assert chance_r1(ds, 0.5) == pytest.approx((2 + 3 + 2 + 1) / 4 / 4)
    assert chance_r1(ds, 0.0) == pytest.approx(1 / 4)
    # aligned a0 -> a1's target: a hit once neighbours are positives, a miss for the strict rule
    aligned = target[[1, 1, 2, 3]]
    m = evaluate_split(aligned, ds, pad_us=0.5)
    assert m["e2t/R@1"] == 1.0 and m["strict/e2t/R@1"] == pytest.approx(0.75)
    assert m["chance/R@1"] == pytest.approx(0.5)
