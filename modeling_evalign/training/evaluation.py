"""Validation metrics of a run: one function for the Accelerate loop and the single-process trainer facade,
scored by the strategy's evaluation rule (``evaluation.scoring``), the rule every other entry point uses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..registry import get_strategy
from .data import shard_indices


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

    Rows by the strategy's evaluation rule (tokens flattened by default): queries are the aligned features;
    the gallery is the target features when they live in the aligned space (same shape, no target head), else
    the model's ``target_embeddings`` (a target head, or the frozen tower's embeddings of image strategies).
    Keys (``evaluation.scoring.score_rows``): ``mse`` and ``cosine`` on those rows, retrieval ``e2t/R@k``,
    ``t2e/R@k``, ``mean/R@k``, and with ``with_loss`` the batch-size-weighted mean ``loss`` over batches of
    more than one row (InfoNCE of one row is meaningless). With an ``accelerator`` of several processes each
    encodes a contiguous shard and rows are gathered, so the retrieval gallery is the whole set.
    """
    from torch.utils.data import DataLoader, Subset

    from ..evaluation.scoring import rows, score_rows

    event_key, target_key = get_strategy(strategy).inputs
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    indices, n_real = shard_indices(len(dataset), rank, world)
    subset = dataset if world == 1 else Subset(dataset, indices)
    has_target_head = getattr(model, "target_head", None) is not None
    was_training = model.training
    model.eval()
    queries, gallery = [], []
    loss_sum = torch.zeros(2, dtype=torch.float64)  # sum of loss * rows, rows
    try:
        for batch in DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers):
            x, y = batch[event_key].to(device), batch[target_key].to(device)
            out = model(**{event_key: x, target_key: y})
            a = out.aligned_features.float()
            emb = getattr(out, "target_embeddings", None)
            if with_loss and out.loss is not None and x.shape[0] > 1:
                loss_sum += torch.tensor([float(out.loss) * x.shape[0], x.shape[0]], dtype=torch.float64)
            # the target in the aligned space: the target features, or the target head's / frozen tower's output
            target = y if (y.shape == a.shape and not has_target_head) or emb is None else emb
            queries.append(rows(model, a).cpu())
            gallery.append(rows(model, target.float()).cpu())
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
    metrics.update(score_rows(q, g, ks=tuple(ks), positive_groups=positive_groups, positive_windows=positive_windows))
    return metrics
