"""evalign cosine similarity as a local ``evaluate`` metric (delegates to ``modeling_evalign.evaluation.metrics``)."""

import datasets
import evaluate

from modeling_evalign.evaluation.metrics import cosine_similarity

_DESCRIPTION = "Mean row-wise cosine similarity between aligned features (predictions) and targets."

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of float vectors [N][D].
    references: list of float vectors [N][D].
Returns:
    "cosine_similarity": float in [-1, 1].
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class EvalignCosine(evaluate.Metric):
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

    def _compute(self, predictions, references):
        return {"cosine_similarity": cosine_similarity(predictions, references)}
