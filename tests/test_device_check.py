"""benchmarks/device_check.py proven on CPU: --quick runs every case, the table and JSON say what they should."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "device_check.py"
IDS = [
    "adapter_pooled_b1", "adapter_pooled_b256", "adapter_tokens", "triple_b1", "triple_b256",
    "firenet_float32", "firenet_bfloat16", "e2vid_float32", "e2vid_bfloat16",
    "extraction_bf16", "bridge_bf16", "lora_step_bf16",
]
TARGETS = {"adapter_pooled_b1": 1.0, "adapter_pooled_b256": 1.0, "adapter_tokens": 1.0, "triple_b1": 2.0,
           "triple_b256": 2.0, "e2vid_float32": 15.0, "e2vid_bfloat16": 15.0, "bridge_bf16": 15.0}


def _module():
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_timer_measures_wall_time_of_one_call():
    dc = _module()
    calls = []

    def sleep_10ms():
        calls.append(1)
        time.sleep(0.01)

    ms = dc.Timer(torch.device("cpu"), repeats=3, warmup=2)(sleep_10ms)
    assert len(calls) == 5  # warm-up calls are not timed
    assert 10.0 <= ms < 200.0
    assert dc.Timer(torch.device("cpu"), repeats=100, warmup=0).scaled(20) == 5


@pytest.mark.slow
def test_quick_run_has_every_row_with_positive_numbers(tmp_path, capsys, one_thread):
    dc = _module()
    report = dc.main(["--quick", "--json", str(tmp_path / "dc.json")])
    out = capsys.readouterr().out
    saved = json.loads((tmp_path / "dc.json").read_text())
    assert saved["rows"] == report["rows"] and saved["quick"] is True
    if not torch.cuda.is_available():
        assert out.splitlines()[0] == dc.NO_GPU and saved["no_gpu"] is True and saved["gpu"] is None
    rows = {r["id"]: r for r in saved["rows"]}
    assert list(rows) == IDS
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(IDS)  # header + one line per row
    for line, row in zip(table[1:], saved["rows"]):
        assert line.startswith(f"| {row['case']} | {row['dtype']} | {row['ms']:.3f} |")
        assert row["ms"] > 0 and row["baseline_ms"] > 0 and row["baseline"]
        assert row["ratio"] == pytest.approx(row["ms"] / row["baseline_ms"])
        assert row["target_ms"] == TARGETS.get(row["id"])
        assert row["meets_target"] == (None if row["target_ms"] is None else row["ms"] < row["target_ms"])
        assert ("yes" if row["meets_target"] else "NO" if row["meets_target"] is False else "-") in line
    assert rows["firenet_bfloat16"]["dtype"] == "bfloat16" and rows["e2vid_float32"]["dtype"] == "float32"
    windows_s = float(rows["extraction_bf16"]["throughput"].split()[0])
    assert windows_s == pytest.approx(2 / rows["extraction_bf16"]["ms"] * 1e3, abs=0.051)
    assert "trainable parameters" in rows["lora_step_bf16"]["note"]


def test_spent_budget_skips_cases_and_says_so(capsys):
    dc = _module()
    report = dc.main(["--quick", "--budget-s", "0"])
    assert [r["id"] for r in report["rows"]] == IDS
    assert all(r["ms"] is None and r["note"].startswith("skipped: time budget") for r in report["rows"])
    if not torch.cuda.is_available():
        assert capsys.readouterr().out.splitlines()[0] == dc.NO_GPU
