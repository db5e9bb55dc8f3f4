"""The one evaluation rule every entry point applies (training validation, training_info.json, the main job,
the brief's script, the strategy map, cross-duration).

A model's aligned features and the targets become retrieval rows by its strategy's rule (the registry's
``evaluation``: by default ``[B, D]`` as is and token features ``[B, N, D]`` flattened to ``[B, N * D]``,
the layout that tells windows of one camera path apart). On those rows: strict bidirectional recall (row i's
positive is gallery row i, or ``positive_groups``/``positive_windows``), ``seq/R@1`` with ``groups`` (any
row of the same group counts), and, when both sides share the rows' shape, ``cosine`` (mean over rows of the
rows' cosine) and ``mse`` (mean over every element).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def score_rows(queries: torch.Tensor, gallery: torch.Tensor, *, groups: Sequence[Any] | None = None,
               ks: Sequence[int] = (1, 5, 10), positive_groups: Any | None = None,
               positive_windows: Any | None = None) -> dict[str, float]:
    """Metrics of retrieval rows ``queries`` ``[N, D]`` against ``gallery`` ``[N, D']`` (see the module)."""
    from .metrics import bidirectional_recall, cosine_similarity, mse

    if queries.dim() != 2 or gallery.dim() != 2 or queries.shape[0] != gallery.shape[0]:
        raise ValueError(f"score_rows: queries {tuple(queries.shape)} and gallery {tuple(gallery.shape)}: expected "
                         "two [N, D] tensors with the same N (apply the strategy's evaluation rule first)")
    queries, gallery = queries.float(), gallery.float()
    out: dict[str, float] = {}
    if queries.shape == gallery.shape:
        out["mse"] = mse(queries, gallery)
        out["cosine"] = cosine_similarity(queries, gallery)
    out.update(bidirectional_recall(queries, gallery, ks=ks, positive_groups=positive_groups,
                                    positive_windows=positive_windows))
    if groups is not None:
        out["seq/R@1"] = bidirectional_recall(queries, gallery, ks=(1,), positive_groups=groups)["mean/R@1"]
    return out


def rows(model, x: torch.Tensor) -> torch.Tensor:
    """``x`` as retrieval rows by ``model``'s strategy rule (``model=None``: the default flatten rule)."""
    from ..registry import retrieval_rows

    return retrieval_rows(model, x)


@torch.inference_mode()
def model_rows(model, event_features: torch.Tensor, target_features: torch.Tensor,
               batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(queries, gallery) of a feature-level model: its aligned features and the targets, by its rule."""
    was_training = model.training
    model.eval()
    try:
        aligned = torch.cat([model(event_features=event_features[i:i + batch_size].float()).aligned_features.float()
                             for i in range(0, len(event_features), batch_size)])
    finally:
        model.train(was_training)
    return rows(model, aligned), rows(model, target_features.float())


def score_model(model, dataset, *, groups_key: str | None = "sequence", ks: Sequence[int] = (1, 5, 10),
                batch_size: int = 256) -> dict[str, float]:
    """The rule's metrics of a feature-level model on an ``AlignmentDataset`` (``seq/R@1`` from the
    ``groups_key`` metadata when every sample has it)."""
    queries, gallery = model_rows(model, dataset.event_features, dataset.target_features, batch_size)
    groups = None
    if groups_key is not None:
        try:
            groups = dataset.metadata_column(groups_key)
        except KeyError:
            groups = None
    return score_rows(queries, gallery, groups=groups, ks=ks)
