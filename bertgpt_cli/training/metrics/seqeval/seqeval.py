"""Local `evaluate` module for entity-level NER scores, computed by seqeval (works offline).

The output has the shape of the Hub's `seqeval` metric: one {precision, recall, f1, number}
dict per entity type, plus overall (micro) precision / recall / F1 and token accuracy.
"""

import datasets
import evaluate
from seqeval.metrics import accuracy_score, classification_report


class Seqeval(evaluate.Metric):
    def _info(self):
        tags = datasets.Sequence(datasets.Value("string"))
        return evaluate.MetricInfo(
            description="Entity-level precision/recall/F1 (conlleval counting), computed with seqeval.",
            citation="",
            inputs_description="predictions and references: one list of BIO tags per sentence.",
            features=datasets.Features({"predictions": tags, "references": tags}),
        )

    def _compute(self, predictions, references, zero_division=0):
        report = classification_report(references, predictions, output_dict=True, zero_division=zero_division)
        micro = report.pop("micro avg")
        for average in ("macro avg", "weighted avg"):
            report.pop(average, None)
        scores = {
            kind: {
                "precision": float(values["precision"]),
                "recall": float(values["recall"]),
                "f1": float(values["f1-score"]),
                "number": int(values["support"]),
            }
            for kind, values in report.items()
        }
        scores["overall_precision"] = float(micro["precision"])
        scores["overall_recall"] = float(micro["recall"])
        scores["overall_f1"] = float(micro["f1-score"])
        scores["overall_accuracy"] = float(accuracy_score(references, predictions))
        return scores
