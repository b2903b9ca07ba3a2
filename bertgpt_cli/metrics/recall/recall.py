"""Local `evaluate` module: recall (scikit-learn's recall_score), same output as the Hub's "recall"."""

import datasets
import evaluate
from sklearn.metrics import recall_score


class Recall(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="recall, computed with scikit-learn (recall_score).",
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
            "recall": float(
                recall_score(
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
