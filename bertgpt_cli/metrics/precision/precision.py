"""Local `evaluate` module: precision (scikit-learn precision_score), as the Hub's "precision"."""

import datasets
import evaluate
from sklearn.metrics import precision_score


class Precision(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="precision, computed with scikit-learn (precision_score).",
            citation="",
            inputs_description="predictions and references: label ids (ints).",
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(
        self, predictions, references, labels=None, pos_label=1, average="binary", sample_weight=None
    ):
        return {
            "precision": float(
                precision_score(
                    references,
                    predictions,
                    labels=labels,
                    pos_label=pos_label,
                    average=average,
                    sample_weight=sample_weight,
                    zero_division=0,
                )
            )
        }
