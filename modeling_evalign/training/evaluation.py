"""Validation metrics of a run: one function for the Accelerate loop and the single-process trainer facade."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .data import MODEL_INPUTS, shard_indices


def _pool(x: torch.Tensor) -> torch.Tensor:
    """``[B, D]`` stays, token-level ``[B, N, D]`` is mean-pooled for retrieval."""
    return x if x.dim() == 2 else x.mean(dim=1)


def _gather_rows(accelerator, local: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Every process's ``local`` rows (padded to equal length), without the padding, in rank order."""
    if accelerator is None or accelerator.num_processes == 1:
        return local
    gathered = accelerator.gather(local.to(accelerator.device).contiguous()).cpu()
    per = local.shape[0]
    return torch.cat([gathered[r * per : r * per + c] for r, c in enumerate(counts)])


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset: Any,
    *,
    strategy: str = "contrastive",
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    accelerator=None,
    ks: Sequence[int] = (1, 5, 10),
    positive_groups: Any | None = None,
    positive_windows: Any | None = None,
    with_loss: bool = False,
    num_workers: int = 0,
) -> dict[str, float]:
    """Metrics of ``model`` (unwrapped) on ``dataset``; every process returns the same dict.

    Keys: ``mse`` and ``cosine`` (aligned vs the target features, or vs the frozen tower's image embeddings
    for image strategies; token by token for token-level inputs), retrieval ``e2t/R@k``, ``t2e/R@k``, ``mean/R@k`` on pooled features (the model's ``pool_tokens``
    when it has one, else the token mean; gallery: the model's
    ``target_embeddings`` when it returns them, i.e. after a target head or the frozen image tower), and with
    ``with_loss`` the batch-size-weighted mean ``loss`` over batches of more than one row (InfoNCE of one
    row is meaningless). With an ``accelerator`` of several processes each encodes a contiguous shard and
    rows are gathered, so the retrieval gallery is the whole set.
    """
    from torch.utils.data import DataLoader, Subset

    from ..evaluation.metrics import bidirectional_recall, cosine_similarity, mse

    event_key, target_key = MODEL_INPUTS[strategy]
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    indices, n_real = shard_indices(len(dataset), rank, world)
    subset = dataset if world == 1 else Subset(dataset, indices)
    # a model that pools tokens for its loss (contrastive's token_pooling) is scored on those same rows
    pool = getattr(model, "pool_tokens", _pool)
    was_training = model.training
    model.eval()
    aligned, targets, queries, gallery = [], [], [], []
    loss_sum = torch.zeros(2, dtype=torch.float64)  # sum of loss * rows, rows
    try:
        for batch in DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers):
            x, y = batch[event_key].to(device), batch[target_key].to(device)
            out = model(**{event_key: x, target_key: y})
            a = out.aligned_features.float()
            emb = getattr(out, "target_embeddings", None)
            if with_loss and out.loss is not None and x.shape[0] > 1:
                loss_sum += torch.tensor([float(out.loss) * x.shape[0], x.shape[0]], dtype=torch.float64)
            aligned.append(a.cpu())
            queries.append(pool(a).cpu())
            gallery.append((emb if emb is not None else pool(y)).float().cpu())
            # the target in the aligned space: the target features, or the frozen tower's image embeddings
            target = y if y.shape == a.shape else emb if emb is not None and emb.shape == a.shape else None
            if target is not None:
                targets.append(target.float().cpu())
    finally:
        model.train(was_training)
    counts = [n_real] if world == 1 else accelerator.gather(torch.tensor([n_real], device=accelerator.device)).cpu().tolist()
    q = _gather_rows(accelerator, torch.cat(queries), counts)
    g = _gather_rows(accelerator, torch.cat(gallery), counts)
    metrics: dict[str, float] = {}
    if with_loss:
        if world > 1:
            loss_sum = accelerator.reduce(loss_sum.to(accelerator.device), reduction="sum").cpu()
        metrics["loss"] = float(loss_sum[0] / loss_sum[1]) if loss_sum[1] else float("nan")
    if len(targets) == len(aligned):  # target features live in the aligned space: compare them directly
        a = _gather_rows(accelerator, torch.cat(aligned), counts)
        t = _gather_rows(accelerator, torch.cat(targets), counts)
        width = a.shape[-1]
        metrics["mse"] = mse(a.reshape(-1, width), t.reshape(-1, width))
        metrics["cosine"] = cosine_similarity(a.reshape(-1, width), t.reshape(-1, width))
    metrics.update(bidirectional_recall(q, g, ks=tuple(ks), positive_groups=positive_groups,
                                        positive_windows=positive_windows))
    return metrics
