"""The lightweight strategy's one declaration: classes, recipe, evaluation rule, strategy-map grid."""

from __future__ import annotations

from ..registry import StrategySpec, register_strategy


def job_recipe(cfg, tower: str) -> dict:
    """The main job: warm-started at the ridge solution, a few epochs refine it."""
    return {"closed_form_init": cfg.ridge, "num_epochs": cfg.lightweight_epochs,
            "model_config": {"adapter_type": "linear"}}


def map_fit(train, params, settings, context):
    """Strategy map: MSE regression, linear (width 0) or residual bottleneck MLP, through the one loop."""
    from ..training.trainer import ContrastiveAlignmentTrainer
    from .configuration_lightweight import LightweightAlignmentConfig
    from .modeling_lightweight import LightweightAlignmentModel

    width = int(params.get("width", 0))
    model = LightweightAlignmentModel(LightweightAlignmentConfig(
        event_dim=train.event_dim, target_dim=train.target_dim, adapter_type="mlp" if width else "linear",
        hidden_dim=width or 256))
    epochs = settings.epochs(len(train))
    ContrastiveAlignmentTrainer(model, train, lr=float(params["lr"]), batch_size=min(settings.batch_size, len(train)),
                                seed=settings.seed, device="cpu", progress=False).train(num_epochs=epochs)
    return model, {"epochs": epochs, "notes": "MSE regression, residual bottleneck MLP" if width else
                   "MSE regression, linear"}


register_strategy(StrategySpec(
    name="lightweight",
    summary="A small adapter (linear or residual bottleneck MLP) from event features to target features.",
    config_class="modeling_evalign.lightweight.configuration_lightweight:LightweightAlignmentConfig",
    model_class="modeling_evalign.lightweight.modeling_lightweight:LightweightAlignmentModel",
    model_type="evalign_lightweight",
    data_kind="features",
    closed_form_init=True,
    # the selection table (the brief's numbers): min / recommended pairs, training time, latency, quality
    profile=(1_000, 5_000, "2-4 hours", "~1 ms", "medium"),
    recipe=job_recipe,
    map_grid={"lr": [1e-3, 3e-3], "width": [256, 1024]},
    map_fit=map_fit,
))
