"""The contrastive strategies' one declaration: CEIA on features (``contrastive``) and with LoRA on the CLIP
vision tower (``contrastive_image``)."""

from __future__ import annotations

from ..registry import StrategySpec, register_strategy


def lora_kwargs(config) -> dict:
    """The image strategies' tower and LoRA settings from a TrainConfig."""
    return dict(clip_model_id=config.clip_model, clip_revision=config.clip_revision, lora_r=config.lora_r,
                lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout)


def build_image(config, data, overrides, clip_model=None):
    from .configuration_contrastive_image import ContrastiveImageAlignmentConfig
    from .modeling_contrastive_image import ContrastiveImageAlignmentModel

    return ContrastiveImageAlignmentModel(ContrastiveImageAlignmentConfig(**lora_kwargs(config), **overrides),
                                          clip_model=clip_model)


def image_job_recipe(cfg, tower: str) -> dict:
    """The main job: LoRA (q/v) on a copy of the vision tower, compared in the token space (penultimate-layer
    patch tokens, the loss over their flattened layout), fed the window's last EventGPT frame."""
    from ..pipeline.features import TOKEN_LAYER

    return {"num_epochs": cfg.image_epochs, "batch_size": cfg.image_batch_size,
            "learning_rate": cfg.image_learning_rate,
            "model_config": {"features": "patch_tokens", "token_layer": TOKEN_LAYER}}


def map_fit(train, params, settings, context):
    """Strategy map: InfoNCE head (linear, or MLP of ``width``), tokens compared as their flattened layout."""
    from ..training.trainer import ContrastiveAlignmentTrainer
    from .configuration_contrastive import ContrastiveAlignmentConfig
    from .modeling_contrastive import ContrastiveAlignmentModel

    width = int(params.get("width", 0))
    model = ContrastiveAlignmentModel(ContrastiveAlignmentConfig(
        event_dim=train.event_dim, target_dim=train.target_dim, temperature=float(params["temperature"]),
        projection_type="mlp" if width else "linear", hidden_dim=width or 1024,
        token_pooling="flatten" if train.event_features.dim() == 3 else "mean"))
    epochs = settings.epochs(len(train))
    ContrastiveAlignmentTrainer(model, train, lr=float(params["lr"]), batch_size=min(settings.batch_size, len(train)),
                                seed=settings.seed, device="cpu", progress=False).train(num_epochs=epochs)
    return model, {"epochs": epochs, "notes": "symmetric InfoNCE, learnable temperature"}


register_strategy(StrategySpec(
    name="contrastive",
    summary="CEIA-style symmetric InfoNCE alignment of event features to a frozen CLIP tower.",
    config_class="modeling_evalign.contrastive.configuration_contrastive:ContrastiveAlignmentConfig",
    model_class="modeling_evalign.contrastive.modeling_contrastive:ContrastiveAlignmentModel",
    model_type="evalign_contrastive",
    data_kind="features",
    # the selection table (the brief's numbers): min / recommended pairs, training time, latency, quality
    profile=(5_000, 10_000, "1-2 days", "~1 ms", "high"),
    # the main job: a per-token head; InfoNCE over the flattened token layout
    recipe={"model_config": {"projection_type": "mlp", "hidden_dim": 512, "token_pooling": "flatten"}},
    map_grid={"lr": [5e-4, 2e-3], "temperature": [0.07, 0.2], "width": [0, 1024]},
    map_fit=map_fit,
))

register_strategy(StrategySpec(
    name="contrastive_image",
    summary="CEIA: LoRA (q/v) on a copy of the CLIP vision tower, InfoNCE against the frozen tower.",
    config_class="modeling_evalign.contrastive.configuration_contrastive_image:ContrastiveImageAlignmentConfig",
    model_class="modeling_evalign.contrastive.modeling_contrastive_image:ContrastiveImageAlignmentModel",
    model_type="evalign_contrastive_image",
    data_kind="images",
    build=build_image,
    recipe=image_job_recipe,
))


def train_contrastive_image(cfg, splits, out, tower, vision, tree, duration):
    """The main job's contrastive_image row (kept for callers of ``pipeline.strategies``): see
    :func:`modeling_evalign.pipeline.strategies.train_image_strategy`."""
    from ..pipeline.strategies import train_image_strategy

    return train_image_strategy(cfg, "contrastive_image", splits, out, tower, vision, tree, duration)
