"""Local `evaluate` module for SQuAD v1.1 exact match and F1 (works offline).

Scored as the official v1.1 evaluation script scores them: answers are normalised (lower
case, punctuation and the articles a/an/the removed, whitespace collapsed), F1 is the
token overlap, and each question takes its best score over the gold answers. Output keys
and scale (0-100) are those of the Hub's `squad` metric.
"""

import collections
import re
import string

import datasets
import evaluate

PUNCTUATION = set(string.punctuation)
# A reference: the question id and its gold answers (the Hub's squad layout); squad_v2 too.
REFERENCE = {
    "id": datasets.Value("string"),
    "answers": datasets.Sequence({"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}),
}
ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    return " ".join(ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


class Squad(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="SQuAD v1.1 exact match and F1, as the official evaluation script counts them.",
            citation="",
            inputs_description="predictions {id, prediction_text}; references {id, answers}.",
            features=datasets.Features(
                {
                    "predictions": {
                        "id": datasets.Value("string"),
                        "prediction_text": datasets.Value("string"),
                    },
                    "references": REFERENCE,
                }
            ),
        )

    def _compute(self, predictions, references):
        answers = {p["id"]: p["prediction_text"] for p in predictions}
        exact = total_f1 = 0.0
        for reference in references:
            golds = reference["answers"]["text"]
            predicted = answers[reference["id"]]
            exact += max(exact_match(predicted, gold) for gold in golds)
            total_f1 += max(f1(predicted, gold) for gold in golds)
        count = max(len(references), 1)
        return {"exact_match": 100.0 * exact / count, "f1": 100.0 * total_f1 / count}
