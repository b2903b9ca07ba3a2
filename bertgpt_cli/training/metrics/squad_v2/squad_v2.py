"""Local `evaluate` module for SQuAD v2.0 (works offline): exact match and F1 as the official
v2.0 evaluation script scores them, over all questions and split into HasAns / NoAns.

A question without gold answers is answered right only by the empty string. Output keys and
scale (0-100) are those of the Hub's `squad_v2` metric (without the threshold search).
"""

import datasets
import evaluate

from bertgpt_cli.training.metrics.squad.squad import REFERENCE, normalize_answer
from bertgpt_cli.training.metrics.squad.squad import exact_match as exact
from bertgpt_cli.training.metrics.squad.squad import f1 as v1_f1


def f1(prediction: str, gold: str) -> float:
    """v1.1's token F1, except that an empty side scores only when both are empty."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:
        return float(predicted == expected)
    return v1_f1(prediction, gold)


class SquadV2(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="SQuAD v2.0 exact match and F1 (HasAns / NoAns), as the official script counts them.",
            citation="",
            inputs_description="predictions {id, prediction_text, no_answer_probability}; references.",
            features=datasets.Features(
                {
                    "predictions": {
                        "id": datasets.Value("string"),
                        "prediction_text": datasets.Value("string"),
                        "no_answer_probability": datasets.Value("float32"),
                    },
                    "references": REFERENCE,
                }
            ),
        )

    def _compute(self, predictions, references):
        answers = {p["id"]: p["prediction_text"] for p in predictions}
        scores = {"HasAns": [], "NoAns": []}
        for reference in references:
            golds = [t for t in reference["answers"]["text"] if normalize_answer(t)] or [""]
            predicted = answers[reference["id"]]
            kind = "HasAns" if golds != [""] else "NoAns"
            scores[kind].append(
                (max(exact(predicted, g) for g in golds), max(f1(predicted, g) for g in golds))
            )
        every = scores["HasAns"] + scores["NoAns"]
        result = _summary(every, "")
        for kind, values in scores.items():
            if values:
                result |= _summary(values, f"{kind}_")
        return result


def _summary(values, prefix: str) -> dict:
    count = len(values)
    return {
        f"{prefix}exact": 100.0 * sum(e for e, _ in values) / max(count, 1),
        f"{prefix}f1": 100.0 * sum(f for _, f in values) / max(count, 1),
        f"{prefix}total": count,
    }
