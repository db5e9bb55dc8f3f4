"""``train_triple_modal``: tensors in, :class:`TripleModalAlignmentModel` trained by THE training loop.

A thin facade over :func:`modeling_evalign.training.loop.train` (one Accelerate process; the same AdamW,
warm-up/cosine schedule and data order as ``train_accelerate.py --strategy triple_modal``). No optimizer
is stepped here. The frozen prompt embeddings are cached by the model, so each step only runs the event
head and the prompt adapter.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence

import torch

from .modeling_triple_modal import TripleModalAlignmentModel


def train_triple_modal(
    model: TripleModalAlignmentModel,
    event_features: torch.Tensor,
    image_features: torch.Tensor,
    labels: torch.Tensor | Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    *,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 5e-4,
    weight_decay: float = 0.0,
    seed: int = 0,
    progress: bool = False,
) -> list[dict[str, float]]:
    """Train ``model`` in place; returns the loop's per-epoch history.

    Args:
        event_features: ``[N, event_dim]``; image_features: ``[N, target_dim]`` CLIP image embeddings.
        labels: ``[N]`` class indices into ``class_names`` (default ``config.class_names``; given names are
            stored in ``model.config.class_names``, the classes it was trained on); without labels only the
            event <-> image term is trained.
        epochs, batch_size, lr, weight_decay, seed: optimisation settings (CEIA uses lr 5e-4, cosine).
            ``batch_size`` is capped at N; the last incomplete batch of an epoch is dropped.
        progress: show a progress bar over steps.

    History entries: ``epoch`` (1-based), ``train_loss`` (mean over the epoch's steps), ``lr``, ``seconds``.
    """
    from ..training.config import IN_MEMORY, TrainConfig
    from ..training.data import LabelledDataset, PairDataset, TrainData
    from ..training.loop import RunOptions, train

    if event_features.shape[0] != image_features.shape[0]:
        raise ValueError(
            f"event_features has {event_features.shape[0]} rows and image_features {image_features.shape[0]}: "
            "expected one image row per event row"
        )
    n = event_features.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 training pairs, got {n}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} is invalid: expected a positive int")
    dataset = PairDataset(event_features.detach(), image_features.detach())
    names: list[str] = []  # empty: no text terms (the loop then reads no labels from metadata)
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.shape != (n,):
            raise ValueError(f"labels has shape {tuple(labels.shape)}: expected ({n},)")
        names = list(class_names) if class_names is not None else list(model.config.class_names or [])
        model.prompt_features(names)  # validates the names (empty, duplicates) before training
        model.config.class_names = names
        dataset = LabelledDataset(dataset, labels.tolist())
    data = TrainData(dataset, None, {"type": "in_memory"}, event_features.shape[-1], image_features.shape[-1],
                     class_names=names)
    device = next(model.parameters()).device
    with tempfile.TemporaryDirectory(prefix="evalign-triple-") as scratch:
        config = TrainConfig(
            strategy="triple_modal", output_dir=scratch, train_dir=IN_MEMORY, num_epochs=epochs,
            batch_size=min(batch_size, n), learning_rate=lr, weight_decay=weight_decay, max_grad_norm=0.0,
            seed=seed, checkpointing_steps=10**12, cpu=device.type == "cpu",
        )
        result = train(config, data=data, options=RunOptions(model=model, save_final=False, progress=progress))
    model.eval()
    return result.history
