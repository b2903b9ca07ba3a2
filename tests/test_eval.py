"""bgcli eval: the same numbers as finetune's test step and as hand computations, sliding-window
perplexity as transformers' guide walks the text, and a paired test for two classifiers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from .test_finetune import NEGATIVE, POSITIVE, finetune, write_csv


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("eval-data")
    rows = [(f"{(POSITIVE if i % 2 else NEGATIVE)[i % 5]} {i}", "pos" if i % 2 else "neg") for i in range(60)]
    test = [(f"{(POSITIVE if i % 3 else NEGATIVE)[i % 5]}", "pos" if i % 3 else "neg") for i in range(24)]
    return {
        "train": write_csv(folder / "train.csv", rows),
        "test": write_csv(folder / "test.csv", test),
        "test_ids": write_csv(folder / "ids.csv", [(t, 1 if label == "pos" else 0) for t, label in test]),
    }


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_bert_dir, data) -> list[Path]:
    from .conftest import run_cli

    runs = []
    for name, epochs in (("short", "1"), ("long", "3")):
        out = tmp_path_factory.mktemp("eval-runs") / name
        extra = ["--train-data", str(data["train"]), "--test-data", str(data["test"]), "--precision", "fp32"]
        result = finetune(run_cli, tiny_bert_dir, out, *extra, "--epochs", epochs)
        assert result.code == 0, result.stderr
        runs.append(out)
    return runs


def predictions(run: Path, texts: list[str]) -> list[str]:
    from transformers import pipeline

    return [r["label"] for r in pipeline("text-classification", model=str(run))(texts)]


def read_rows(path: Path) -> list[tuple[str, str]]:
    import csv

    with path.open() as handle:
        return [(r["text"], r["label"]) for r in csv.DictReader(handle)]


def test_classification_equals_finetunes_test_step_and_the_pipeline(cli, two_runs, data):
    run = two_runs[1]
    result = cli(["eval", "-m", str(run), "--data", str(data["test"])])
    assert result.code == 0, result.stderr
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    finetune_test = json.loads((run / "metrics.json").read_text())["test"]
    for name in ("accuracy", "f1_macro", "loss"):
        assert record[name] == pytest.approx(finetune_test[f"test_{name}"], abs=1e-4)
    rows = read_rows(data["test"])
    predicted = predictions(run, [t for t, _ in rows])
    assert record["accuracy"] == pytest.approx(
        sum(p == label for p, (_, label) in zip(predicted, rows, strict=False)) / len(rows)
    )
    assert record["task"] == "classification" and record["rows"] == len(rows)
    # Integer labels map onto the model's labels by id (neg = 0, pos = 1, as trained).
    by_id = json.loads(cli(["eval", "-m", str(run), "--data", str(data["test_ids"])]).stdout)
    assert by_id["accuracy"] == pytest.approx(record["accuracy"])


def test_compare_pairs_the_rows_and_runs_mcnemar(cli, two_runs, data):
    from scipy.stats import binomtest

    result = cli(["eval", "--compare", *map(str, two_runs), "--data", str(data["test"]), "-f", "json"])
    assert result.code == 0, result.stderr
    record = json.loads(result.stdout)
    rows = read_rows(data["test"])
    right = [
        [p == label for p, (_, label) in zip(predictions(run, [t for t, _ in rows]), rows, strict=False)]
        for run in two_runs
    ]
    only_first = sum(a and not b for a, b in zip(*right, strict=False))
    only_second = sum(b and not a for a, b in zip(*right, strict=False))
    paired = record["paired_test"]
    assert (paired["only_first_correct"], paired["only_second_correct"]) == (only_first, only_second)
    expected_p = (
        binomtest(only_first, only_first + only_second, 0.5).pvalue if only_first + only_second else 1.0
    )
    assert paired["p_value"] == pytest.approx(expected_p)
    accuracy = record["metrics"]["accuracy"]
    assert accuracy["difference"] == pytest.approx(accuracy["second"] - accuracy["first"])
    table = cli(["eval", "--compare", *map(str, two_runs), "--data", str(data["test"]), "-f", "table"])
    assert "McNemar" in table.stdout and "difference" in table.stdout


def test_report_dir_and_its_guard(cli, two_runs, data, tmp_path):
    out = tmp_path / "report"
    result = cli(["eval", "-m", str(two_runs[0]), "--data", str(data["test"]), "-o", str(out)])
    assert result.code == 0, result.stderr
    assert {p.name for p in out.iterdir()} == {"eval.json", "README.md", "confusion_matrix.png"}
    saved = json.loads((out / "eval.json").read_text())
    assert saved["models"][0]["report"]["confusion_matrix"] and "| pos |" in (out / "README.md").read_text()
    again = cli(["eval", "-m", str(two_runs[0]), "--data", str(data["test"]), "-o", str(out)])
    assert again.code == 0  # its own report may be replaced
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"\xff")
    refused = cli(["eval", "-m", str(two_runs[0]), "--data", str(data["test"]), "-o", str(foreign)])
    assert refused.code == 2 and "holds other files" in refused.stderr


def guide_perplexity(model_dir: Path, text: str, window: int, stride: int) -> float:
    """transformers' perplexity guide, window by window, each window's loss weighted by the
    tokens it scores (the guide's loop)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = tokenizer(text, return_tensors="pt").input_ids
    total, count, previous_end = 0.0, 0, 0
    for begin in range(0, ids.size(1), stride):
        end = min(begin + window, ids.size(1))
        target_length = end - previous_end
        inputs = ids[:, begin:end]
        targets = inputs.clone()
        targets[:, :-target_length] = -100
        with torch.no_grad():
            loss = model(inputs, labels=targets).loss
        scored = int((targets[:, 1:] != -100).sum())
        total += float(loss) * scored
        count += scored
        previous_end = end
        if end == ids.size(1):
            break
    return math.exp(total / count)


@pytest.mark.parametrize("window, stride", [("16", "8"), ("16", "16"), ("64", "5")])
def test_clm_perplexity_is_the_guides_sliding_window(cli, tiny_gpt2_dir, tmp_path, window, stride):
    texts = ["the movie was great and the actors were wonderful", "a terrible film with a boring plot"] * 3
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(texts) + "\n")
    args = ["eval", "-m", str(tiny_gpt2_dir), "--data", str(path), "--max-length", window, "--stride", stride]
    result = cli([*args, "--batch-size", "3"])
    assert result.code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["task"] == "clm" and "sliding window" in record["protocol"]
    expected = guide_perplexity(tiny_gpt2_dir, "\n\n".join(texts), int(window), int(stride))
    assert record["perplexity"] == pytest.approx(expected, rel=1e-4)


def test_mlm_scores_are_the_same_on_every_run(cli, tiny_bert_dir, tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(["the movie was great and the actors were wonderful"] * 8) + "\n")
    runs = [json.loads(cli(["eval", "-m", str(tiny_bert_dir), "--data", str(path)]).stdout) for _ in range(2)]
    assert runs[0]["task"] == "mlm" and "perplexity" in runs[0]
    assert runs[0] == runs[1]


def test_ner_equals_finetunes_test_step(cli, tiny_bert_dir, tmp_path):
    conll = tmp_path / "train.conll"
    sentence = "paris B-LOC\nis O\nbig O\n\njohn B-PER\nsmith I-PER\nin O\nrome B-LOC\n\n"
    conll.write_text(sentence * 6)
    run = tmp_path / "ner-run"
    extra = ["--task", "ner", "--train-data", str(conll), "--test-data", str(conll), "--precision", "fp32"]
    assert finetune(cli, tiny_bert_dir, run, *extra).code == 0
    result = cli(["eval", "-m", str(run), "--data", str(conll)])
    assert result.code == 0, result.stderr
    record = json.loads(result.stdout)
    finetune_test = json.loads((run / "metrics.json").read_text())["test"]
    assert record["task"] == "ner"
    for name in ("f1", "precision", "recall"):
        assert record[name] == pytest.approx(finetune_test[f"test_{name}"], abs=1e-6)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "x.csv"], "pass one model"),
        (["--compare", "a", "--data", "x.csv"], "--compare needs exactly two models"),
        (["-m", "a"], "pass --data SPEC"),
        (["-m", "a", "--data", "x.csv", "--stride", "0"], "--stride must be >= 1"),
    ],
)
def test_usage_errors(cli, args, message):
    result = cli(["eval", *args])
    assert result.code == 2 and message in result.stderr


def test_a_bare_encoder_is_scored_as_a_retriever(cli, bare_encoder_dir, data):
    """No task head: retrieval, whose columns the labelled data lacks (one line naming the flag)."""
    result = cli(["eval", "-m", str(bare_encoder_dir), "--data", str(data["test"])])
    assert "scored as --task retrieval" in result.stderr
    assert result.code == 2 and "--anchor-column" in result.stderr


def test_multi_label_is_scored_against_the_pipelines_label_sets(cli, tiny_multilabel_dir, tmp_path):
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import MultiLabelBinarizer
    from transformers import pipeline

    rows = [
        ("the movie was great", ["comedy"]),
        ("a terrible film with a boring plot", ["drama"]),
        ("what a fun and charming comedy", ["comedy", "action"]),
        ("paris", []),
    ]
    data = tmp_path / "movies.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": labels}) + "\n" for t, labels in rows))
    result = cli(["eval", "-m", str(tiny_multilabel_dir), "--data", str(data)])
    assert result.code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["task"] == "classification"
    scores = pipeline("text-classification", model=str(tiny_multilabel_dir), top_k=None)([t for t, _ in rows])
    predicted = [[s["label"] for s in row if s["score"] >= 0.5] for row in scores]
    names = ["action", "comedy", "drama"]
    binarizer = MultiLabelBinarizer(classes=names)
    truth, guess = binarizer.fit_transform([labels for _, labels in rows]), binarizer.transform(predicted)
    assert record["f1_micro"] == pytest.approx(f1_score(truth, guess, average="micro", zero_division=0))
    assert record["f1_macro"] == pytest.approx(f1_score(truth, guess, average="macro", zero_division=0))


def test_qa_equals_bgcli_qa_answers_scored_by_the_squad_metric(cli, tiny_qa_dir, tmp_path):
    from bertgpt_cli.training.metrics import load_metric

    context = "paris is the capital of france and london of england"
    questions = [("what is the capital of france", "paris"), ("and of england", "london")]
    rows = [
        {
            "id": str(i),
            "question": q,
            "context": context,
            "answers": {"text": [a], "answer_start": [context.index(a)]},
        }
        for i, (q, a) in enumerate(questions)
    ]
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = cli(
        ["eval", "-m", str(tiny_qa_dir), "--data", str(data), "--max-length", "64", "--doc-stride", "16"]
    )
    assert result.code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["task"] == "qa"
    asked = "".join(
        json.dumps({"id": r["id"], "question": r["question"], "context": context}) + "\n" for r in rows
    )
    answers = [
        json.loads(line)["answer"]
        for line in cli(
            ["qa", "-m", str(tiny_qa_dir), "--max-length", "64", "--doc-stride", "16"], input=asked
        ).stdout.splitlines()
    ]
    expected = load_metric("squad").compute(
        predictions=[{"id": r["id"], "prediction_text": a} for r, a in zip(rows, answers, strict=True)],
        references=[{"id": r["id"], "answers": r["answers"]} for r in rows],
    )
    assert record["exact_match"] == pytest.approx(expected["exact_match"])
    assert record["f1"] == pytest.approx(expected["f1"])
