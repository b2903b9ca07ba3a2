"""Classification metrics through `evaluate`, from modules shipped in this folder.

`evaluate.load("accuracy")` fetches its script from the Hub, which fails offline; these
local modules (same names, same outputs, computed with scikit-learn) load in ~0.3 s.
`import evaluate` costs seconds, so it happens only here, inside training commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
LOCAL_METRICS = ("accuracy", "f1", "precision", "recall", "seqeval", "squad", "squad_v2")


def load_metric(name: str, config_name: str | None = None):
    import evaluate

    from ...errors import BgcliError, first_line

    if name in LOCAL_METRICS:
        return evaluate.load(str(HERE / name / f"{name}.py"), config_name)
    try:  # any other evaluate metric: needs the Hub (or its cache)
        return evaluate.load(name)
    except Exception as exc:  # noqa: BLE001
        raise BgcliError(
            f"cannot load metric '{name}' ({first_line(exc)}); built-in metrics "
            f"work offline: {', '.join(LOCAL_METRICS)}"
        ) from exc


class ClassificationMetrics:
    """accuracy, macro F1 / precision / recall (+ extra evaluate metrics) for Trainer.

    multi_label: predictions and references are 0/1 indicator rows; accuracy is then the
    share of rows whose whole label set is right (exact match), and micro F1 is added."""

    def __init__(self, extra: list[str] | None = None, multi_label: bool = False):
        self.multi_label = multi_label
        config = "multilabel" if multi_label else None
        self.metrics = {name: load_metric(name, config) for name in LOCAL_METRICS}
        self.extra = {name: load_metric(name) for name in (extra or []) if name not in LOCAL_METRICS}

    def __call__(self, predictions, references) -> dict[str, float]:
        kwargs: dict[str, Any] = {"predictions": predictions, "references": references}
        scores = dict(self.metrics["accuracy"].compute(**kwargs))
        for name in ("f1", "precision", "recall"):
            value = self.metrics[name].compute(**kwargs, average="macro")[name]
            scores[f"{name}_macro"] = value
        if self.multi_label:
            scores["f1_micro"] = self.metrics["f1"].compute(**kwargs, average="micro")["f1"]
        for metric in self.extra.values():
            scores.update(metric.compute(**kwargs))
        return {k: float(v) for k, v in scores.items()}


class EntityMetrics:
    """Entity-level micro precision / recall / F1 (as conlleval and seqeval count them), token
    accuracy, and F1 per entity type (`f1_PER`), from BIO tag sequences, for Trainer."""

    def __init__(self):
        self.metric = load_metric("seqeval")

    def __call__(self, predictions: list[list[str]], references: list[list[str]]) -> dict[str, float]:
        scores = self.metric.compute(predictions=predictions, references=references)
        flat = {name: scores[f"overall_{name}"] for name in ("precision", "recall", "f1", "accuracy")}
        for kind, values in sorted(scores.items()):
            if isinstance(values, dict):
                flat[f"f1_{kind}"] = values["f1"]
        return flat
