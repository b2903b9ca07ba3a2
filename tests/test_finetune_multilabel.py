"""finetune --multi-label: label sets per row, sigmoid head, metrics, and use by classify/pipeline."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from bertgpt_cli.training.finetune import FinetuneConfig

# Each keyword (a whole word in the tiny test vocabulary) brings its genre; a row may have
# none, one or several.
KEYWORDS = {"fun": "comedy", "terrible": "horror", "loved": "romance"}
FILLER = ["film", "movie", "story", "plot", "music", "picture"]


def genre_rows(count: int, offset: int = 0) -> list[tuple[str, list[str]]]:
    rows = []
    words = list(KEYWORDS)
    for i in range(offset, offset + count):
        chosen = [w for bit, w in enumerate(words) if (i >> bit) & 1]
        text = " ".join([FILLER[i % len(FILLER)], *chosen, FILLER[(i // 8) % len(FILLER)]])
        rows.append((text, sorted(KEYWORDS[w] for w in chosen)))
    return rows


@pytest.fixture(scope="module")
def genres(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("genres")
    train, test = genre_rows(96), genre_rows(24, offset=96)

    def jsonl(path: Path, rows) -> Path:
        path.write_text("".join(json.dumps({"text": t, "genres": g}) + "\n" for t, g in rows))
        return path

    with (folder / "test.csv").open("w", newline="") as handle:  # text labels: "comedy|horror"
        writer = csv.writer(handle)
        writer.writerow(["text", "genres"])
        writer.writerows((t, "|".join(g)) for t, g in test)
    return {
        "train": jsonl(folder / "train.jsonl", train),
        "test": folder / "test.csv",
        "unseen": jsonl(folder / "unseen.jsonl", [("a musical", ["musical"])]),
    }


def multi_label_args(model_dir, train: Path, out: Path, *extra: str) -> list[str]:
    return [
        "finetune",
        "-m",
        str(model_dir),
        "--train-data",
        str(train),
        "--label-column",
        "genres",
        "--multi-label",
        "--label-separator",
        "|",
        "--epochs",
        "20",
        "--batch-size",
        "8",
        "--lr",
        "3e-3",
        "--eval-split",
        "0.25",
        "--output",
        str(out),
        "--quiet",
        "--format",
        "jsonl",
        *extra,
    ]


@pytest.fixture(scope="module")
def multi_label_run(tmp_path_factory, genres, tiny_bert_dir):
    from tests.conftest import run_cli

    out = tmp_path_factory.mktemp("ml") / "run"
    result = run_cli(
        multi_label_args(tiny_bert_dir, genres["train"], out, "--test-data", str(genres["test"]))
    )
    assert result.code == 0, result.stderr
    return out, json.loads(result.stdout)


def test_multi_label_run_saves_a_sigmoid_head_with_sorted_label_names(multi_label_run):
    out, summary = multi_label_run
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert config["id2label"] == {"0": "comedy", "1": "horror", "2": "romance"}
    assert {"test_accuracy", "test_f1_micro", "test_f1_macro"} <= set(summary)
    # Learnt, not guessed: the best constant answers get F1 micro 0.67 (every label on every
    # row) and exact match 1/8 (any one label set); this seeded run gets ~0.83 and 0.5.
    assert summary["test_f1_micro"] > 0.75 and summary["test_accuracy"] > 0.3
    metrics = json.loads((out / "metrics.json").read_text())
    matrices = metrics["test_report"]["label_confusion_matrices"]
    assert np.array(matrices).shape == (3, 2, 2) and np.array(matrices).sum() == 3 * 24
    assert "comedy" in metrics["test_report"]["per_class"]
    assert not (out / "confusion_matrix.png").exists()  # no single matrix for label sets
    assert "multi-label" in (out / "README.md").read_text()


def test_multi_label_metrics_match_scikit_learn(multi_label_run, genres):
    # The run's test metrics recomputed from the saved model's own predictions.
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import pipeline

    out, summary = multi_label_run
    rows = list(csv.DictReader(genres["test"].open()))
    names = ["comedy", "horror", "romance"]
    truth = np.array([[int(n in r["genres"].split("|")) for n in names] for r in rows])
    scored = pipeline("text-classification", model=str(out), top_k=None)([r["text"] for r in rows])
    predicted = np.array(
        [[int({s["label"]: s["score"] for s in row}[n] >= 0.5) for n in names] for row in scored]
    )
    assert summary["test_accuracy"] == pytest.approx(accuracy_score(truth, predicted), abs=1e-3)
    assert summary["test_f1_micro"] == pytest.approx(f1_score(truth, predicted, average="micro"), abs=1e-3)


def test_classify_gives_the_label_sets_of_a_multi_label_run(cli, multi_label_run):
    out, _ = multi_label_run
    texts = ["fun terrible movie", "loved story", "plot"]
    result = cli(["classify", "-m", str(out), "--all-scores", "--format", "jsonl", *texts])
    assert result.code == 0, result.stderr
    for line in result.stdout.splitlines():
        record = json.loads(line)
        assert record["labels"] == [k for k, v in record["scores"].items() if v >= 0.5]


def test_multi_label_label_sets_from_lists_and_text():
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    from bertgpt_cli.training.tasks import MultiLabelClassificationTask

    config = FinetuneConfig(train_data="x", label_column="tags", multi_label=True, label_separator=";")
    task = MultiLabelClassificationTask(config, tokenizer=None)
    train = Dataset.from_dict({"text": ["a", "b", "c"], "tags": [["x", "y"], [], ["y"]]})
    task.labels = task._label_set(train, None)
    assert task.labels.names == ["x", "y"]
    as_text = Dataset.from_dict({"text": ["d", "e"], "tags": ["y; x", ""]})
    assert task._encode_labels(as_text, "test")["labels"] == [[1.0, 1.0], [0.0, 0.0]]
    # A Hub-style list of ClassLabel ids, in another name order: matched by name.
    features = Features({"text": Value("string"), "tags": Sequence(ClassLabel(names=["y", "x"]))})
    hub = Dataset.from_dict({"text": ["f"], "tags": [[0]]}, features=features)
    assert task._encode_labels(hub, "test")["labels"] == [[0.0, 1.0]]
    # A plain ClassLabel column (one label per row, e.g. the built-in reviews): by name too.
    single = Features({"text": Value("string"), "tags": ClassLabel(names=["x", "y"])})
    one_each = Dataset.from_dict({"text": ["g", "h"], "tags": [1, 0]}, features=single)
    assert task._encode_labels(one_each, "test")["labels"] == [[0.0, 1.0], [1.0, 0.0]]


def test_multi_label_errors_are_one_line(cli, tiny_bert_dir, genres, tmp_path):
    unseen = cli(
        multi_label_args(tiny_bert_dir, genres["train"], tmp_path / "a", "--test-data", str(genres["unseen"]))
    )
    assert (
        unseen.code == 2
        and "label(s) musical not seen in training (comedy, horror, romance)" in unseen.stderr
    )
    not_for_lm = cli(["finetune", "--task", "mlm", "--multi-label", "--train-data", str(genres["train"])])
    assert not_for_lm.code == 2 and "--multi-label applies to classification" in not_for_lm.stderr


def test_multi_label_class_weights_are_negatives_over_positives(
    cli, tiny_bert_dir, genres, tmp_path, multi_label_run
):
    from datasets import Dataset

    from bertgpt_cli.training.tasks import LabelSet, MultiLabelClassificationTask

    task = MultiLabelClassificationTask(FinetuneConfig(train_data="x", multi_label=True), tokenizer=None)
    task.labels = LabelSet(["a", "b"])
    train = Dataset.from_dict({"labels": [[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0]]})
    assert task.class_weights(train) == [1 / 3, 3 / 1]  # a: 1 negative / 3 positives; b: 3 / 1
    out = tmp_path / "weighted"
    weighted = cli(multi_label_args(tiny_bert_dir, genres["train"], out, "--class-weights", "auto"))
    assert weighted.code == 0, weighted.stderr  # the weighted BCE loss trains end to end
    # Same data, seed and steps as the unweighted run: only the loss weighting differs.
    unweighted_dir, _ = multi_label_run
    losses = [
        json.loads((d / "metrics.json").read_text())["train"]["train_loss"] for d in (out, unweighted_dir)
    ]
    assert losses[0] != pytest.approx(losses[1], rel=1e-3)
