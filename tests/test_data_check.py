"""`bgcli data check` finds what would make training or evaluation wrong, and says so in its
exit status; finetune warns about the blocking part before it trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("text,label\n" + "".join(f'"{t}",{label}\n' for t, label in rows))
    return path


TRAIN = [(f"review number {i} of the film", "pos" if i % 2 else "neg") for i in range(40)]
TRAIN += [("a rare one", "meh"), ("review number 3 of the film", "pos"), ("", "neg")]


@pytest.fixture
def splits(tmp_path) -> dict[str, Path]:
    test = [("Review  number 5 of the FILM", "neg"), ("review number 7 of the film", "pos")]
    test += [("something new", "pos"), ("a label never trained on", "great")]
    return {
        "train": write_csv(tmp_path / "train.csv", TRAIN),
        "test": write_csv(tmp_path / "test.csv", test),
        "clean_test": write_csv(tmp_path / "clean.csv", [("brand new text", "pos"), ("another one", "neg")]),
    }


def report_of(result) -> dict:
    return json.loads(result.stdout)


def problems(report: dict, check: str) -> list[dict]:
    return [p for p in report["problems"] if p["check"] == check]


def test_counts_duplicates_overlap_and_labels(cli, splits):
    result = cli(["data", "check", "--train-data", str(splits["train"]), "--test-data", str(splits["test"])])
    assert result.code == 1 and "would make training or evaluation wrong" in result.stderr
    report = report_of(result)
    train = report["splits"]["train"]
    assert train["rows"] == 43 and train["empty_texts"] == 1 and train["duplicate_texts"] == 1
    assert train["labels"] == {"neg": 21, "pos": 21, "meh": 1}
    assert report["overlap"]["train/test"] == {"exact": 1, "normalized": 2}
    (overlap,) = problems(report, "train overlap")
    assert overlap["severity"] == "error" and "2 test rows (50.0%)" in overlap["message"]
    assert "1 of them only after lowercasing" in overlap["message"]
    (unseen,) = problems(report, "unseen labels")
    assert unseen["severity"] == "error" and "great (1 rows)" in unseen["message"]
    (tiny,) = problems(report, "tiny classes")
    assert "meh (1)" in tiny["message"]
    assert problems(report, "imbalance")  # 21 vs 1
    assert problems(report, "duplicates")[0]["examples"] == ["2x review number 3 of the film"]
    assert report["ok"] is False


def test_clean_splits_exit_0(cli, splits):
    result = cli(
        ["data", "check", "--train-data", str(splits["train"]), "--eval-data", str(splits["clean_test"])]
    )
    assert result.code == 0, result.stderr
    report = report_of(result)
    assert report["ok"] is True and not problems(report, "train overlap")
    assert {p["severity"] for p in report["problems"]} == {"warning"}


def test_eval_overlap_is_a_warning(cli, splits):
    result = cli(["data", "check", "--train-data", str(splits["train"]), "--eval-data", str(splits["train"])])
    report = report_of(result)
    (overlap,) = problems(report, "train overlap")
    assert overlap["severity"] == "warning" and result.code == 0


def test_token_lengths_with_a_model(cli, splits, tiny_bert_dir):
    args = [
        "data",
        "check",
        "--train-data",
        str(splits["train"]),
        "-m",
        str(tiny_bert_dir),
        "--max-length",
        "6",
    ]
    report = report_of(cli(args))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    lengths = [len(tokenizer(t)["input_ids"]) for t, _ in TRAIN if t]
    tokens = report["splits"]["train"]["tokens"]
    assert tokens["max"] == max(lengths)
    assert tokens["over_max_length"] == sum(n > 6 for n in lengths)
    assert problems(report, "length") and "will be truncated" in problems(report, "length")[0]["message"]


def test_multi_label_set_sizes(cli, tmp_path):
    data = tmp_path / "movies.jsonl"
    rows = [
        {"text": f"t{i}", "genres": g} for i, g in enumerate([["a"], ["a", "b"], [], ["a", "b", "c", "d"]])
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["data", "check", "--train-data", str(data), "--multi-label", "--label-column", "genres"]
    report = report_of(cli(args))
    train = report["splits"]["train"]
    assert train["label_set_sizes"] == {"0": 1, "1": 1, "2": 1, "3+": 1}
    assert train["labels"]["a"] == 3 and train["rows_without_label"] == 1


def test_ner_counts_entities_by_type(cli, tmp_path):
    train = tmp_path / "train.conll"
    train.write_text("Paris B-LOC\nis O\nbig O\n\nJohn B-PER\nSmith I-PER\nin O\nRome B-LOC\n")
    test = tmp_path / "test.conll"
    test.write_text("Paris B-LOC\nis O\nbig O\n\nAcme B-ORG\n")
    result = cli(["data", "check", "--task", "ner", "--train-data", str(train), "--test-data", str(test)])
    report = report_of(result)
    assert report["splits"]["train"]["labels"] == {"LOC": 2, "PER": 1}
    assert report["overlap"]["train/test"]["exact"] == 1
    assert "ORG (1 rows)" in problems(report, "unseen labels")[0]["message"] and result.code == 1


def test_table_on_a_terminal_format(cli, splits):
    result = cli(
        [
            "data",
            "check",
            "--train-data",
            str(splits["train"]),
            "--test-data",
            str(splits["test"]),
            "-f",
            "table",
        ]
    )
    assert result.code == 1
    assert "splits" in result.stdout and "error: 2 test rows" in result.stdout and "meh" in result.stdout


def test_missing_column_is_one_line(cli, splits):
    result = cli(["data", "check", "--train-data", str(splits["train"]), "--text-column", "review"])
    assert result.code == 2 and "no column 'review'" in result.stderr and "--text-column" in result.stderr


def test_finetune_warns_about_test_rows_in_training(cli, splits, tiny_bert_dir, tmp_path):
    args = ["finetune", "-m", str(tiny_bert_dir), "--train-data", str(splits["train"]), "--test-data"]
    args += [
        str(splits["clean_test"]),
        "--eval-data",
        str(splits["train"]),
        "--max-steps",
        "1",
        "--batch-size",
        "4",
    ]
    args += ["--max-eval-samples", "4", "-o", str(tmp_path / "run")]
    result = cli(args)
    assert result.code == 0, result.stderr
    assert "eval rows (100.0%) are also in the training data" in result.stderr
    assert "test rows" not in result.stderr
