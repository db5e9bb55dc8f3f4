"""The package is grouped by concern; its public names import from the package root, cheaply."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import modeling_evalign

# module paths from before the package was grouped by concern: gone (never released), no alias finder
OLD_PATHS = ("metrics", "diagnosis", "speculative", "cross_duration", "plots", "cards", "remote_code", "trainer",
             "tiny_models", "synthetic_features", "io_utils")


@pytest.mark.parametrize("old", OLD_PATHS)
def test_old_module_paths_are_gone(old):
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(f"modeling_evalign.{old}")


def test_no_finder_on_sys_meta_path_and_reload_reloads():
    assert not [f for f in sys.meta_path if type(f).__module__.startswith("modeling_evalign")]
    # in a fresh process: reloading here would give other tests a second copy of the module's classes
    code = ("import importlib, modeling_evalign.evaluation.metrics as m; m.mse = None; "
            "assert callable(importlib.reload(m).mse); print('reloaded')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr  # an alias loader used to make reload a no-op
    assert out.stdout.strip() == "reloaded"


def test_public_names_stay_importable_from_the_package():
    from modeling_evalign import AlignmentDataset, ContrastiveAlignmentTrainer, LightweightAlignmentModule

    assert ContrastiveAlignmentTrainer.__module__ == "modeling_evalign.training.trainer"
    assert LightweightAlignmentModule.__module__ == "modeling_evalign.lightweight.modeling_lightweight"
    assert AlignmentDataset.__module__ == "modeling_evalign.data.alignment_dataset"


def test_import_is_cheap_no_accelerate_no_scipy():
    """``python -X importtime -c "import modeling_evalign"``: registration imports no transformers modeling code,
    so neither accelerate nor scipy; AutoModel still finds every strategy (its model registers on its first
    config)."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import modeling_evalign"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    modules = [line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")]
    assert "modeling_evalign" in modules
    heavy = [m for m in modules if m.split(".")[0] in ("accelerate", "scipy") or m == "transformers.modeling_utils"]
    assert not heavy, heavy[:5]
    code = ("import sys, modeling_evalign; from transformers import AutoConfig, AutoModel; "
            "assert 'accelerate' not in sys.modules; "
            "m = AutoModel.from_config(AutoConfig.for_model('evalign_contrastive', event_dim=4, target_dim=4)); "
            "print(type(m).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ContrastiveAlignmentModel"


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
    assert len(loose) <= 9, loose


def test_python_dash_m_pipeline_help():
    out = subprocess.run([sys.executable, "-m", "modeling_evalign.pipeline", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage: python -m modeling_evalign.pipeline" in out.stdout


def _package_sources():
    from pathlib import Path

    root = Path(modeling_evalign.__file__).parent
    return root, sorted(root.rglob("*.py"))


def test_one_table_formatter_and_small_modules():
    """One results-table formatter (``pipeline.report.format_table``; the brief's script feeds it rows) and no
    package module over ~400 lines."""
    root, files = _package_sources()
    formatters = [p.relative_to(root).as_posix() for p in files if "def format_table(" in p.read_text()]
    assert formatters == ["pipeline/report.py"], formatters
    assert "format_table(" in (root / "pipeline" / "dsec_alignment.py").read_text()
    long = {p.relative_to(root).as_posix(): n for p in files if (n := len(p.read_text().splitlines())) > 420}
    assert not long, long


@pytest.mark.parametrize("name,folder", [("contrastive_image", "contrastive"), ("triple_modal_image", "triple_modal")])
def test_image_strategy_names_live_in_their_folder(name, folder):
    """The registry is the one place other code learns strategy names: the quoted name appears in at most
    two package files outside the strategy's folder."""
    root, files = _package_sources()
    outside = [p.relative_to(root).as_posix() for p in files
               if p.relative_to(root).parts[0] != folder and (f'"{name}"' in (t := p.read_text()) or f"'{name}'" in t)]
    assert len(outside) <= 2, outside
