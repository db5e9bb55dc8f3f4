"""Stage 4 of the main job: one function per strategy row, each returning what the evaluation compares.

Every trained strategy runs through the Accelerate loop (``training.loop``) on the TRAIN split only (the
validation split drives its per-epoch validation; the test split is never seen), resumes after a kill and is
reused by a rerun (its ``final/`` directory).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..contrastive.strategy import train_contrastive_image  # noqa: F401  (the seam other stages call)
from .config import PipelineConfig
from .features import log


def aligned(model, features: torch.Tensor) -> torch.Tensor:
    """Aligned features as retrieval rows by the model's strategy rule (token outputs ``[N, P, D]`` flattened to
    ``[N, P * D]`` by default; see ``evaluation.scoring``)."""
    from ..evaluation.scoring import rows

    model.eval()
    with torch.inference_mode():
        return rows(model, model(event_features=features).aligned_features.float())


def targets(model, features: torch.Tensor) -> torch.Tensor:
    """The targets as retrieval rows by the same rule (the gallery ``aligned`` is compared with)."""
    from ..evaluation.scoring import rows

    return rows(model, features.float())


def closed_form(cfg: PipelineConfig, train) -> torch.nn.Module:
    """Ridge regression (float64, centred) from event to target features, token by token (one map for every
    patch): the instant baseline."""
    from ..lightweight.configuration_lightweight import LightweightAlignmentConfig
    from ..lightweight.modeling_lightweight import LightweightAlignmentModel

    model = LightweightAlignmentModel(
        LightweightAlignmentConfig(event_dim=train.event_dim, target_dim=train.target_dim, adapter_type="linear")
    )
    model.fit_closed_form(train.event_features, train.target_features, ridge=cfg.ridge)
    return model


def _base_config(cfg: PipelineConfig, strategy: str, out: Path, n_train: int, **kw):
    from ..training.config import TrainConfig

    batch = min(kw.pop("batch_size", cfg.batch_size), n_train)
    return TrainConfig(strategy=strategy, output_dir=str(out), num_epochs=kw.pop("num_epochs", cfg.num_epochs),
                       batch_size=batch, learning_rate=kw.pop("learning_rate", cfg.learning_rate), seed=cfg.seed,
                       checkpointing_steps=10_000, checkpoints_total_limit=1, resume_from_checkpoint="latest",
                       cpu=True, **kw)


def recipe(cfg: PipelineConfig, strategy: str, tower: str) -> dict:
    """The strategy's training defaults in the main job (its spec's ``recipe``), as TrainConfig fields."""
    from ..registry import get_strategy

    spec = get_strategy(strategy)
    extra = dict(spec.recipe(cfg, tower) if callable(spec.recipe) else spec.recipe)
    model_config = extra.pop("model_config", {})
    if isinstance(model_config, dict):
        model_config = [f"{k}={json.dumps(v)}" for k, v in model_config.items()]
    if spec.needs_labels:
        extra.setdefault("label_key", "label")
    return {**extra, "model_config": list(model_config)}


def train_feature_strategy(cfg: PipelineConfig, strategy: str, dirs: dict[str, Path], out: Path, tower: str,
                           fields: dict | None = None):
    """Any feature-level strategy of the registry with its recipe (lightweight: warm-started at the ridge
    solution; contrastive: a per-token InfoNCE head; triple_modal: token mode, class prompts from the tower's own
    text encoder), token by token on the token-space directories ``dirs``. ``fields`` (TrainConfig fields, as
    :func:`recipe` returns them) replace the recipe, for studies of other recipes."""
    from transformers import AutoModel

    from ..data.alignment_dataset import AlignmentDataset
    from ..hub.paths import point_tower_at
    from ..training.loop import run

    final = out / "final"
    if not (final / "config.json").is_file():
        n_train = len(AlignmentDataset.from_directory(dirs["train"]))
        config = _base_config(cfg, strategy, out, n_train,
                              train_dir=str(dirs["train"]),
                              val_dir=str(dirs["validation"]) if "validation" in dirs else None,
                              **(recipe(cfg, strategy, tower) if fields is None else fields))
        run(config)
    model = AutoModel.from_pretrained(final)
    point_tower_at(model.config, tower)  # config.json names a local tower only: re-attach this run's directory
    return model


class quiet_loading:
    """No transformers load report while the text tower loads from a full CLIP checkpoint (its vision weights
    are expected to be unused)."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self.verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()

    def __exit__(self, *exc):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(self.verbosity)


def zero_shot_accuracy(model, test) -> tuple[float, float]:
    """triple_modal's zero-shot accuracy on the test windows (classes: the trained class names) and chance."""
    names = list(model.config.class_names)
    labels = test.metadata_column("label")
    model.eval()
    with torch.inference_mode():
        predicted = model.zero_shot_classify(test.event_features.float(), names).labels.tolist()
    known = [(p, names.index(y)) for p, y in zip(predicted, labels) if y in names]
    acc = sum(p == y for p, y in known) / max(1, len(known))
    return acc, 1.0 / len(names)


def train_image_strategy(cfg: PipelineConfig, strategy: str, splits: dict, out: Path, tower: str, vision,
                         tree: Path, duration: str) -> torch.Tensor:
    """An image-level strategy of the registry (contrastive_image: CEIA's LoRA on q/v of every block of a copy of
    the vision tower) with its recipe, the last EventGPT frame of each window vs the frozen tower's RGB frames;
    returns the test windows' aligned features as retrieval rows (its rule: patch tokens flattened)."""
    from ..evaluation.scoring import rows
    from ..registry import get_strategy
    from ..training.data import ImagePairDataset, TrainData
    from ..training.loop import train

    size = vision.config.image_size
    # the window's last EventGPT frame (its final fifth of events, nearest the target frame in time): with the
    # frozen tower its patch tokens already retrieve the RGB frame (27% at 1s), CEIA's histograms not (1%)
    pairs = {s: ImagePairDataset(splits[s].select_columns(["eventgpt_frames", "rgb"]), "eventgpt_frames", "rgb", size)
             for s in splits}
    final = out / "final"
    if not (final / "config.json").is_file():
        # the data is given directly (the job's own splits); dsec_data_dir only records where it came from
        extra = recipe(cfg, strategy, tower)
        config = _base_config(cfg, strategy, out, len(pairs["train"]), clip_model=tower,
                              dsec_data_dir=str(tree), durations=[duration], **extra)
        data = TrainData(pairs["train"], pairs.get("validation"), {"type": "pipeline", "duration": duration, "data_dir": str(tree)})
        train(config, None, data=data, clip_model=_copy(vision))
    model = get_strategy(strategy).get_model_class().from_pretrained(final, clip_model=_copy(vision))
    model.eval()
    feats = []
    with torch.inference_mode():
        test = pairs["test"]
        for i in range(0, len(test), 32):
            batch = torch.stack([test[j]["event_pixel_values"] for j in range(i, min(len(test), i + 32))])
            feats.append(rows(model, model(event_pixel_values=batch).aligned_features.float()))
    return torch.cat(feats)


def _copy(vision):
    import copy

    return copy.deepcopy(vision)


def reconstruction_features(cfg: PipelineConfig, tree: Path, test, tower: str, vision) -> torch.Tensor:
    """FireNet frames of every test window (state carried along each sequence) -> the same tower and head."""
    from ..events.dsec_reader import DsecEventReader
    from ..reconstruction.modeling_reconstruction import ReconstructionAlignmentModel, encode_windows
    from .features import TOKEN_LAYER, load_vision_tower

    model = ReconstructionAlignmentModel.from_reconstruction_checkpoint(
        cfg.firenet, clip_model_id=cfg.clip,
        clip_config=None if cfg.clip else json.loads(vision.config.to_json_string()),
        feature_layer=TOKEN_LAYER, max_steps_per_window=cfg.reconstruction_max_steps,
    )
    model.set_clip_tower(load_vision_tower(tower, with_projection=False))  # the plain CLIPVisionModel of the same weights
    readers: dict[str, DsecEventReader] = {}

    def windows():
        for row in test.samples_list():
            seq = row["sequence"]
            reader = readers.get(seq) or readers.setdefault(seq, DsecEventReader(tree / seq))
            w = reader.read_window(row["window_start_us"], row["window_end_us"])
            yield {"sequence": seq, "x": w.x, "y": w.y, "t": w.t, "p": w.p}

    width, height = cfg.sensor_size
    tokens = encode_windows(model, windows(), height=height, width=width, token_level=True)
    return tokens[:, 1:].flatten(1).float()  # the token space: patch tokens, CLS dropped


def have_firenet(cfg: PipelineConfig) -> bool:
    if cfg.firenet and Path(cfg.firenet).is_file():
        return True
    log(f"    reconstruction skipped: no FireNet weights at {cfg.firenet} (pass --firenet PATH)")
    return False
