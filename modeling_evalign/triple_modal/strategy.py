"""The triple-modal strategies' one declaration (EventBind/E-CLIP): on features (``triple_modal``) and with LoRA
on the CLIP vision tower (``triple_modal_image``)."""

from __future__ import annotations

from ..registry import StrategySpec, register_strategy


def _text_projection_dim(text_model: str) -> int:
    """``projection_dim`` of a CLIP checkpoint's text tower (config only, no weights)."""
    from transformers import AutoConfig

    clip = AutoConfig.from_pretrained(text_model)
    return int(getattr(clip, "projection_dim", None) or clip.text_config.projection_dim)


def build(config, data, overrides, clip_model=None):
    from .configuration_triple_modal import TripleModalAlignmentConfig
    from .modeling_triple_modal import TripleModalAlignmentModel

    text_model = config.text_model or config.clip_model
    dims = dict(event_dim=data.event_dim, target_dim=data.target_dim)
    if overrides.get("image_features") == "tokens":  # image side: the RGB tokens; text space: the tower's
        dims = dict(event_dim=data.event_dim, image_token_dim=data.target_dim,
                    target_dim=overrides.pop("target_dim", None) or _text_projection_dim(text_model))
    return TripleModalAlignmentModel(TripleModalAlignmentConfig(
        **dims, class_names=data.class_names, text_model_id=text_model, **overrides))


def build_image(config, data, overrides, clip_model=None):
    from ..contrastive.strategy import lora_kwargs
    from .configuration_triple_modal_image import TripleModalImageAlignmentConfig
    from .modeling_triple_modal_image import TripleModalImageAlignmentModel

    # text tower None -> the CLIP checkpoint itself (a full CLIP checkpoint holds both towers)
    return TripleModalImageAlignmentModel(TripleModalImageAlignmentConfig(
        **lora_kwargs(config), class_names=data.class_names if data else None,
        text_model_id=config.text_model, **overrides), clip_model=clip_model)


def job_recipe(cfg, tower: str) -> dict:
    """The main job: token mode (event-image term on the patch tokens, text terms through a text head), class
    prompts in the words the tower was trained on (the proxy's captions say "a photo of the ...")."""
    model_config = {"image_features": "tokens", "hidden_dim": 512}
    if not cfg.clip:
        model_config["image_prompt_template"] = "a photo of the {}"
    return {"clip_model": tower, "text_model": tower, "label_key": "label", "model_config": model_config}


def map_fit(train, params, settings, context):
    """Strategy map: event-image term, plus the text terms when a text tower and labels are given."""
    import torch

    from .configuration_triple_modal import TripleModalAlignmentConfig
    from .modeling_triple_modal import TripleModalAlignmentModel
    from .training import train_triple_modal

    text_tower, label_key = context.get("text_tower"), context.get("label_key", "scene")
    ev, tg = train.event_features.float(), train.target_features.float()
    width = int(params.get("width", 0))
    values = None
    if text_tower is not None:
        try:
            values = [str(v) for v in train.metadata_column(label_key)]
        except KeyError:
            values = None
    names = sorted(set(values)) if values else None
    dims = dict(event_dim=ev.shape[-1], target_dim=tg.shape[-1])
    if ev.dim() == 3:  # token mode: the image side is the RGB tokens, the text space the text tower's
        if text_tower is None:
            raise ValueError("triple_modal on token features needs a text tower (its text space)")
        dims = dict(event_dim=ev.shape[-1], image_token_dim=tg.shape[-1], image_features="tokens",
                    target_dim=int(text_tower.model.config.projection_dim))
    model = TripleModalAlignmentModel(TripleModalAlignmentConfig(
        **dims, projection_type="mlp" if width else "linear", hidden_dim=width or 1024,
        logit_scale=min(100.0, 1.0 / float(params["temperature"])), class_names=names,
        **({"text_model_id": text_tower.source} if text_tower is not None else {})))
    info: dict = {"epochs": settings.epochs(len(train))}
    labels = None
    if names:
        model.set_text_tower(text_tower.model, text_tower.tokenizer)
        labels = torch.tensor([names.index(v) for v in values])
        info["class_names"] = names
        info["notes"] = f"event-image + event-text + image-text terms, {len(names)} classes from {label_key!r}"
    else:
        info["notes"] = "event-image term only (no text tower or no labels)"
    train_triple_modal(model, ev, tg, labels, names, epochs=info["epochs"],
                       batch_size=min(settings.batch_size, len(train)), lr=float(params["lr"]), seed=settings.seed)
    return model, info


register_strategy(StrategySpec(
    name="triple_modal",
    summary="EventBind/E-CLIP-style event-image, event-text and image-text alignment with zero-shot prompts.",
    config_class="modeling_evalign.triple_modal.configuration_triple_modal:TripleModalAlignmentConfig",
    model_class="modeling_evalign.triple_modal.modeling_triple_modal:TripleModalAlignmentModel",
    model_type="evalign_triple_modal",
    data_kind="features",
    # the selection table (the brief's numbers): min / recommended pairs, training time, latency, quality
    profile=(10_000, 50_000, "2-3 days", "~2 ms", "highest"),
    build=build,
    needs_labels=True,
    recipe=job_recipe,
    map_grid={"lr": [5e-4, 2e-3], "temperature": [0.01, 0.07], "width": [1024]},
    map_fit=map_fit,
))

register_strategy(StrategySpec(
    name="triple_modal_image",
    summary="EventBind-style event-image and event-text terms with LoRA (q/v) on the CLIP vision tower.",
    config_class="modeling_evalign.triple_modal.configuration_triple_modal_image:TripleModalImageAlignmentConfig",
    model_class="modeling_evalign.triple_modal.modeling_triple_modal_image:TripleModalImageAlignmentModel",
    model_type="evalign_triple_modal_image",
    data_kind="images",
    build=build_image,
    needs_labels=True,
))
