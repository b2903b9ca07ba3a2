"""Local `evaluate` module: f1 (scikit-learn's f1_score), same output as the Hub's "f1"."""

import datasets
import evaluate
from sklearn.metrics import f1_score


class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="f1, computed with scikit-learn (f1_score).",
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
            "f1": float(
                f1_score(
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
