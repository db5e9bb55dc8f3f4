"""A compact training loop for :class:`TripleModalAlignmentModule` on pre-extracted features.

For multi-process runs use the Accelerate entry point (train_accelerate.py); this loop is the
single-process path used by the strategy comparison and the tests. Prompt embeddings are computed
once (the text tower is frozen), so each step only runs the event head and the prompt adapter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .modeling_triple_modal import TripleModalAlignmentModule


def train_triple_modal(
    model: TripleModalAlignmentModule,
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
    """Train with Adam and a cosine learning-rate schedule; returns one dict per epoch.

    Args:
        event_features: ``[N, event_dim]``; image_features: ``[N, target_dim]`` CLIP image embeddings.
        labels: ``[N]`` class indices into ``class_names`` (default ``config.class_names``); without
            labels only the event <-> image term is trained.
        epochs, batch_size, lr, weight_decay, seed: optimisation settings (CEIA uses lr 5e-4, cosine).
        progress: show a tqdm bar over epochs.

    History entries: ``epoch``, ``train_loss`` (mean over batches) and the mean of each loss term.
    """
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
    prompts = {}
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.shape != (n,):
            raise ValueError(f"labels has shape {tuple(labels.shape)}: expected ({n},)")
        names = list(class_names) if class_names is not None else list(model.config.class_names or [])
        image_prompts, event_prompts = model.prompt_features(names)
        prompts = {"image_prompt_features": image_prompts, "event_prompt_features": event_prompts}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(n / batch_size)
    # a final batch of one row has no negatives: fold it into the previous one
    if n % batch_size == 1 and steps_per_epoch > 1:
        steps_per_epoch -= 1
    total = epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    gen = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    epoch_iter = range(1, epochs + 1)
    if progress:
        from tqdm.auto import tqdm

        epoch_iter = tqdm(epoch_iter, desc="triple-modal", unit="epoch")
    model.train()
    for epoch in epoch_iter:
        order = torch.randperm(n, generator=gen)
        batches = list(order.split(batch_size))
        if len(batches) > steps_per_epoch:
            batches[-2] = torch.cat(batches[-2:])
            batches.pop()
        sums: dict[str, float] = {}
        for idx in batches:
            out = model(
                event_features[idx],
                target_features=image_features[idx],
                labels=labels[idx] if labels is not None else None,
                **prompts,
            )
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            scheduler.step()
            for key in ("loss", "event_image_loss", "event_text_loss", "image_text_loss", "prompt_mse_loss"):
                value = getattr(out, key)
                if value is not None:
                    sums[key] = sums.get(key, 0.0) + float(value.detach())
        entry = {"epoch": epoch, "train_loss": sums.pop("loss") / len(batches)}
        entry.update({k: v / len(batches) for k, v in sums.items()})
        history.append(entry)
    model.eval()
    return history
