"""The strategy registry: adding a strategy is a new folder plus one registration line. A toy strategy, written
here into a folder of its own, runs through training, evaluation, Auto loading, the strategy map and the main job
without any other file changing."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from modeling_evalign.registry import StrategySpec, get_strategy, register_strategy, strategy_names

TOY = {
    "__init__.py": "",
    "configuration_toy.py": '''
        from modeling_evalign.configuration_utils import EvalignConfig


        class ToyAlignmentConfig(EvalignConfig):
            model_type = "evalign_toy"

            event_dim: int = 8
            target_dim: int = 8

            def __post_init__(self, **kwargs):
                self._check_positive_ints("event_dim", "target_dim")
                super().__post_init__(**kwargs)
        ''',
    "modeling_toy.py": '''
        import torch
        from torch import nn

        from modeling_evalign.modeling_outputs import AlignmentOutput
        from modeling_evalign.modeling_utils import EvalignPreTrainedModel

        from .configuration_toy import ToyAlignmentConfig


        class ToyAlignmentModel(EvalignPreTrainedModel):
            """One linear map, token by token, trained with MSE."""

            config_class = ToyAlignmentConfig

            def __init__(self, config):
                super().__init__(config)
                self.proj = nn.Linear(config.event_dim, config.target_dim)
                self.post_init()

            def _init_weights(self, module):
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, std=0.02)
                    nn.init.zeros_(module.bias)

            def forward(self, event_features, target_features=None, **kwargs):
                aligned = self.proj(event_features)
                loss = None if target_features is None else torch.mean((aligned - target_features) ** 2)
                return AlignmentOutput(loss=loss, aligned_features=aligned)
        ''',
    # the strategy's one declaration; importing it is the one registration line
    "strategy.py": '''
        from modeling_evalign.registry import StrategySpec, register_strategy


        def map_fit(train, params, settings, context):
            from modeling_evalign.training.trainer import ContrastiveAlignmentTrainer

            from .configuration_toy import ToyAlignmentConfig
            from .modeling_toy import ToyAlignmentModel

            model = ToyAlignmentModel(ToyAlignmentConfig(event_dim=train.event_dim, target_dim=train.target_dim))
            ContrastiveAlignmentTrainer(model, train, lr=float(params["lr"]), batch_size=min(8, len(train)),
                                        seed=settings.seed, progress=False).train(num_epochs=2)
            return model, {"epochs": 2, "notes": "toy"}


        register_strategy(StrategySpec(
            name="toy",
            config_class="toy_strategy.configuration_toy:ToyAlignmentConfig",
            model_class="toy_strategy.modeling_toy:ToyAlignmentModel",
            model_type="evalign_toy",
            data_kind="features",
            recipe={"num_epochs": 2, "learning_rate": 3e-3},
            map_grid={"lr": [1e-2]},
            map_fit=map_fit,
        ), exist_ok=True)
        ''',
}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_pkg")
    folder = root / "toy_strategy"
    folder.mkdir()
    for name, source in TOY.items():
        (folder / name).write_text(textwrap.dedent(source).lstrip())
    sys.path.insert(0, str(root))
    try:
        import toy_strategy.strategy  # noqa: F401  (the registration line)

        yield get_strategy("toy")
    finally:
        sys.path.remove(str(root))


def _recall_at_k(query: torch.Tensor, gallery: torch.Tensor, k: int) -> float:
    """float64 brute force, strict positives (row i), ties against the query."""
    q = torch.nn.functional.normalize(query.double().flatten(1), dim=-1)
    g = torch.nn.functional.normalize(gallery.double().flatten(1), dim=-1)
    sim = q @ g.T
    ranks = [(sim[i] >= sim[i, i]).sum().item() - 1 for i in range(len(sim))]
    return float(np.mean(np.asarray(ranks) < k))


def _token_dirs(root: Path) -> dict[str, Path]:
    from modeling_evalign.data.alignment_dataset import AlignmentDataset
    from modeling_evalign.data.synthetic_features import make_linear_pairs

    pairs = make_linear_pairs(80, 6, 6, noise=0.2, seed=1, num_tokens=3)
    full = AlignmentDataset(pairs.event_features, pairs.target_features, [{"sequence": f"s{i // 5}"} for i in range(80)])
    dirs = {}
    for split, rows in (("train", range(48)), ("validation", range(48, 64)), ("test", range(64, 80))):
        dirs[split] = full.subset(rows).save_to_directory(root / split)
    return dirs


def test_toy_strategy_trains_evaluates_and_loads_with_automodel(toy, tmp_path):
    from transformers import AutoModel

    from modeling_evalign.data.alignment_dataset import AlignmentDataset
    from modeling_evalign.training.config import TrainConfig
    from modeling_evalign.training.loop import run

    assert "toy" in strategy_names("features") and toy.inputs == ("event_features", "target_features")
    dirs = _token_dirs(tmp_path / "feats")
    (result,) = run(TrainConfig(strategy="toy", output_dir=str(tmp_path / "run"), train_dir=str(dirs["train"]),
                                val_dir=str(dirs["validation"]), num_epochs=3, batch_size=8, learning_rate=1e-2,
                                cpu=True))
    assert result.losses[-1] < result.losses[0]
    final = tmp_path / "run" / "final"
    model = AutoModel.from_pretrained(final)  # registered with AutoModel by the registry, no edit elsewhere
    assert type(model).__name__ == "ToyAlignmentModel"
    info = json.loads((final / "training_info.json").read_text())
    assert info["strategy"] == "toy" and info["model_type"] == "evalign_toy"
    val = AlignmentDataset.from_directory(dirs["validation"])
    with torch.no_grad():
        aligned = model(event_features=val.event_features).aligned_features
    for k in (1, 5):
        assert info["final_metrics"][f"e2t/R@{k}"] == pytest.approx(_recall_at_k(aligned, val.target_features, k))
    assert info["final_metrics"]["mse"] == pytest.approx(float(((aligned - val.target_features) ** 2).mean()), rel=1e-5)
    with pytest.raises(ValueError, match="unknown strategy 'toyy'"):
        get_strategy("toyy")


def test_toy_strategy_in_the_strategy_map(toy, tmp_path):
    from modeling_evalign.evaluation.strategy_map import TrainSettings, evaluate_run, fit_run, load_duration

    _token_dirs(tmp_path / "1s")
    data = load_duration("1s", tmp_path / "1s", tokens=True)
    model, info = fit_run("toy", data.subset(40), {"lr": 1e-2}, TrainSettings(steps=10, batch_size=8))
    assert info["notes"] == "toy" and type(model).__name__ == "ToyAlignmentModel"
    metrics = evaluate_run(model, data, info)
    test = data.splits["test"]
    with torch.no_grad():
        aligned = model(test.event_features.float()).aligned_features
    assert metrics["test"]["strict/e2t/R@1"] == pytest.approx(_recall_at_k(aligned, test.target_features, 1))


def test_toy_strategy_in_cross_duration(toy, tmp_path):
    from modeling_evalign.evaluation.cross_duration import cross_duration_matrix, strategy_fitter

    dirs = {d: _token_dirs(tmp_path / d)["train"] for d in ("200ms", "1s")}
    result = cross_duration_matrix(dirs, fitter=strategy_fitter("toy"), val_fraction=0.25, group_by="sequence")
    assert result.durations == ["200ms", "1s"] and all(0.0 <= v <= 1.0 for row in result.matrix for v in row)
    assert result.metrics["1s"]["1s"]["mse"] > 0
    with pytest.raises(ValueError, match="no map_fit"):
        strategy_fitter("contrastive_image")


def test_register_rejects_a_clash_and_bad_specs(toy):
    other = StrategySpec(name="toy", config_class="x:Y", model_class="x:Z", model_type="evalign_other",
                         data_kind="features")
    with pytest.raises(ValueError, match="already registered"):
        register_strategy(other)
    with pytest.raises(ValueError, match="data_kind"):
        StrategySpec(name="bad", config_class="x:Y", model_class="x:Z", model_type="t", data_kind="pixels")
    with pytest.raises(ValueError, match="evaluation"):
        StrategySpec(name="bad", config_class="x:Y", model_class="x:Z", model_type="t", evaluation="median")


@pytest.mark.slow
def test_toy_strategy_in_the_main_job(toy, tmp_path):
    """The main job trains the toy through its recipe; its row and checkpoint carry the rule's metrics."""
    from test_pipeline import _config

    from modeling_evalign.data.alignment_dataset import AlignmentDataset
    from modeling_evalign.pipeline.job import run_pipeline

    cfg = _config(tmp_path / "demo", strategies=["unaligned", "toy"], firenet=None)
    rows = run_pipeline(cfg)
    assert [r.strategy for r in rows] == ["unaligned", "toy"]
    final = tmp_path / "demo" / "runs" / "1s" / "toy" / "final"
    info = json.loads((final / "training_info.json").read_text())
    assert info["num_epochs"] == 2 and info["hyperparameters"]["lr"] == 3e-3  # the spec's recipe
    from transformers import AutoModel

    model = AutoModel.from_pretrained(final)
    feats = tmp_path / "demo" / "features" / "1s"
    for split, metrics in (("test", rows[1].metrics), ("validation", info["final_metrics"])):
        ds = AlignmentDataset.from_directory(feats / split)
        with torch.no_grad():
            aligned = model(event_features=ds.event_features.float()).aligned_features
        assert metrics["e2t/R@1"] == pytest.approx(_recall_at_k(aligned, ds.target_features, 1)), split
        assert metrics["t2e/R@5"] == pytest.approx(_recall_at_k(ds.target_features, aligned, 5)), split
    assert info["test_metrics"]["e2t/R@1"] == rows[1].metrics["e2t/R@1"]
