"""The package is grouped by concern; modules that moved keep their old import names."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import modeling_evalign

MOVED = {
    "metrics": "evaluation.metrics",
    "diagnosis": "evaluation.diagnosis",
    "speculative": "evaluation.speculative",
    "cross_duration": "evaluation.cross_duration",
    "plots": "evaluation.plots",
    "cards": "hub.cards",
    "remote_code": "hub.remote_code",
    "trainer": "training.trainer",
    "tiny_models": "features.tiny_models",
    "synthetic_features": "data.synthetic_features",
    "io_utils": "utils.io_utils",
}


@pytest.mark.parametrize("old,new", sorted(MOVED.items()))
def test_old_module_name_is_the_moved_module(old, new):
    assert importlib.import_module(f"modeling_evalign.{old}") is importlib.import_module(f"modeling_evalign.{new}")


def test_from_old_module_import_name():
    from modeling_evalign.metrics import retrieval_recall
    from modeling_evalign.trainer import ContrastiveAlignmentTrainer

    assert retrieval_recall.__module__ == "modeling_evalign.evaluation.metrics"
    assert ContrastiveAlignmentTrainer is modeling_evalign.ContrastiveAlignmentTrainer


def test_hub_package_keeps_the_old_module_api():
    from modeling_evalign.hub import push_to_hub
    from modeling_evalign.hub.push import push_to_hub as real

    assert push_to_hub is real


def test_unknown_name_still_raises():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("modeling_evalign.no_such_module")
    with pytest.raises(AttributeError, match="no_such_name"):
        modeling_evalign.no_such_name  # noqa: B018


def test_root_holds_concern_folders_and_few_base_modules():
    from pathlib import Path

    root = Path(modeling_evalign.__file__).parent
    loose = sorted(p.stem for p in root.glob("*.py") if p.stem != "__init__")
    assert len(loose) <= 8, loose


def test_python_dash_m_pipeline_help():
    out = subprocess.run([sys.executable, "-m", "modeling_evalign.pipeline", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage: python -m modeling_evalign.pipeline" in out.stdout
