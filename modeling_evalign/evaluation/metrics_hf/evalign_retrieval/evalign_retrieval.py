"""evalign retrieval recall as a local ``evaluate`` metric (delegates to ``modeling_evalign.evaluation.metrics``).

Load without network: ``modeling_evalign.evaluation.metrics.load_metric("retrieval")`` (or ``evaluate.load`` of
this directory). ``predictions`` are aligned event features and ``references`` the target features,
one vector per row, row ``i`` paired with row ``i``.
"""

import datasets
import evaluate

from modeling_evalign.evaluation.metrics import TimeWindows, bidirectional_recall

_DESCRIPTION = """Cross-modal retrieval recall at K between aligned event features (predictions) and target
features (references), cosine similarity, in both directions. The positive of query i is gallery row i;
its rank is the number of other gallery rows scoring >= it (pessimistic ties). With positive_groups,
rows sharing the query's label all count as positives and only rows of other groups are counted."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of float vectors [N][D], aligned event features.
    references: list of float vectors [N][D], target features.
    ks: recall cut-offs, default (1, 5, 10).
    chunk_size: query rows scored per block (memory bound), default automatic.
    positive_groups: optional N labels; rows with the query's label are acceptable positives.
    positive_windows: optional TimeWindows or dict(sequence=[N], start=[N], end=[N]); rows of the same
        sequence whose time windows overlap the query's are acceptable positives.
Returns:
    "e2t/R@k", "t2e/R@k", "mean/R@k" for each k: fractions in [0, 1].
Example:
    >>> metric = load_metric("retrieval")
    >>> metric.compute(predictions=[[1.0, 0.0], [0.0, 1.0]], references=[[1.0, 0.1], [0.1, 1.0]], ks=[1])
    {'e2t/R@1': 1.0, 't2e/R@1': 1.0, 'mean/R@1': 1.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class EvalignRetrieval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Sequence(datasets.Value("float32")),
                }
            ),
        )

    def _compute(
        self, predictions, references, ks=(1, 5, 10), chunk_size=None, positive_groups=None, positive_windows=None
    ):
        if isinstance(positive_windows, dict):
            positive_windows = TimeWindows(**positive_windows)
        return bidirectional_recall(
            predictions,
            references,
            ks=tuple(ks),
            chunk_size=chunk_size,
            positive_groups=positive_groups,
            positive_windows=positive_windows,
        )
