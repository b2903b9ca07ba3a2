"""Extractive QA: `finetune --task qa` on SQuAD-style records, and `bgcli qa` decoding equal
to an independent run_qa-style decoding (one window and many), long documents, bad records."""

from __future__ import annotations

import json
import random
import sys

import numpy as np
import pytest

CITIES = ["paris", "london", "rome", "berlin"]
FILLER = ["the", "movie", "was", "great", "and", "actors", "story", "slow", "music"]


def _record(rng: random.Random, index: int) -> dict:
    city = rng.choice(CITIES)
    before = " ".join(rng.choice(FILLER) for _ in range(rng.randint(3, 40)))
    after = " ".join(rng.choice(FILLER) for _ in range(rng.randint(3, 40)))
    context = f"{before} the capital is {city} and {after}"
    start = len(before) + len(" the capital is ")
    answers = {"text": [city], "answer_start": [start]}
    return {"id": f"q{index}", "question": "what is the capital?", "context": context, "answers": answers}


@pytest.fixture(scope="module")
def qa_run(tmp_path_factory, tiny_bert_dir):
    """A tiny QA model trained on "... the capital is X ..." contexts (learns it in seconds)."""
    from .conftest import run_cli

    folder = tmp_path_factory.mktemp("qa")
    rng = random.Random(0)
    rows = [_record(rng, i) for i in range(60)]
    bad = {
        "id": "bad",
        "question": "what?",
        "context": "paris is nice",
        "answers": {"text": ["rome"], "answer_start": [0]},
    }
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*rows, bad]))
    (folder / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:12]))
    args = ["finetune", "--task", "qa", "-m", str(tiny_bert_dir), "--train-data", str(folder / "train.jsonl")]
    args += ["--eval-data", str(folder / "dev.jsonl"), "--test-data", str(folder / "dev.jsonl")]
    args += ["--max-length", "32", "--doc-stride", "8", "--epochs", "2", "--lr", "5e-3", "--batch-size", "8"]
    args += ["--precision", "fp32", "-o", str(folder / "run")]
    result = run_cli(args)
    assert result.code == 0, result.stderr
    return folder, result


def test_finetune_qa_reports_squad_scores_and_skips_bad_answers(qa_run):
    folder, result = qa_run
    assert (
        "skipping 1 of 61 record(s) with a bad answer: bad (answer 'rome' is not at character 0"
        in result.stderr
    )
    metrics = json.loads((folder / "run/metrics.json").read_text())
    assert {"eval_exact_match", "eval_f1", "test_exact_match", "test_f1"} <= {
        *metrics["eval"],
        *metrics["test"],
    }
    assert metrics["eval"]["eval_f1"] > 50  # it learned the pattern: the decoding found the spans
    assert "Worst test misses" in (folder / "run/README.md").read_text()
    from transformers import AutoModelForQuestionAnswering

    AutoModelForQuestionAnswering.from_pretrained(folder / "run")  # a normal model dir


def _reference_answer(model_dir, question: str, context: str, window: int, stride: int, max_answer: int = 30):
    """run_qa-style decoding written out plainly: windows at the same stride, then the best
    start + end logit over valid context spans of every window."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir).eval()
    encoded = tokenizer(
        question,
        context,
        truncation="only_second",
        max_length=window,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    best = (-np.inf, None)
    for i, ids in enumerate(encoded["input_ids"]):
        inputs = {k: torch.tensor([encoded[k][i]]) for k in ("input_ids", "token_type_ids") if k in encoded}
        with torch.no_grad():
            out = model(**inputs)
        start, end = out.start_logits[0].numpy(), out.end_logits[0].numpy()
        in_context = [s == 1 for s in encoded.sequence_ids(i)]
        offsets = encoded["offset_mapping"][i]
        for s in range(len(ids)):
            for e in range(s, min(len(ids), s + max_answer)):
                if in_context[s] and in_context[e] and start[s] + end[e] > best[0]:
                    best = (start[s] + end[e], (offsets[s][0], offsets[e][1]))
    return best[1], len(encoded["input_ids"])


@pytest.mark.parametrize("filler_words", [5, 200])
def test_qa_equals_the_reference_decoding_in_one_window_and_many(cli, qa_run, tmp_path, filler_words):
    folder, _ = qa_run
    rng = random.Random(filler_words)
    context = " ".join(rng.choice(FILLER) for _ in range(filler_words)) + " the capital is rome and the end"
    (tmp_path / "doc.txt").write_text(context)
    question = "what is the capital?"
    result = cli(
        ["qa", "-m", str(folder / "run"), "--question", question, "--context", str(tmp_path / "doc.txt")]
    )
    assert result.code == 0, result.stderr
    answer = json.loads(result.stdout)
    (start, end), windows = _reference_answer(folder / "run", question, context, window=64, stride=16)
    assert (filler_words > 50) == (windows > 1)  # the long case really spans several windows
    assert (answer["start"], answer["end"]) == (start, end)
    assert context[answer["start"] : answer["end"]] == answer["answer"]


def test_a_10000_token_document_is_answered_near_its_end(cli, qa_run, tmp_path):
    folder, _ = qa_run
    rng = random.Random(1)
    filler = " ".join(rng.choice(FILLER) for _ in range(10_000))
    context = f"{filler} the capital is berlin and the movie was great"
    (tmp_path / "long.txt").write_text(context)
    result = cli(
        [
            "qa",
            "-m",
            str(folder / "run"),
            "--question",
            "what is the capital?",
            "--context",
            str(tmp_path / "long.txt"),
        ]
    )
    assert result.code == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["answer"] == "berlin" and answer["start"] == context.rindex("berlin")


def test_jsonl_records_bad_ones_reported_and_top_k(cli, qa_run):
    folder, _ = qa_run
    rows = [
        {"id": 1, "question": "what is the capital?", "context": "the capital is rome and the movie"},
        {"id": 2, "question": "what is the capital?"},
        {"id": 3, "question": "what is the capital?", "context": "  "},
        {"id": 4, "context": "the capital is paris"},
        {"id": 5, "question": "what is the capital?", "context": "the story was slow the capital is paris"},
    ]
    stdin = "".join(json.dumps(r) + "\n" for r in rows)
    result = cli(["qa", "-m", str(folder / "run"), "--top-k", "2", "-f", "jsonl"], input=stdin)
    assert result.code == 1
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in out] == [1, 2, 3, 4, 5]
    assert [r.get("line") for r in out] == [None, 2, 3, 4, None]
    for record, row in ((out[0], rows[0]), (out[4], rows[4])):
        assert row["context"][record["start"] : record["end"]] == record["answer"]
        assert len(record["answers"]) == 2 and record["answers"][0]["answer"] == record["answer"]
        assert 0 < record["score"] <= 1
    assert "line 2: no 'context' field" in result.stderr


def test_a_model_without_a_qa_head_is_refused(cli, tiny_classifier_dir, tmp_path):
    (tmp_path / "doc.txt").write_text("the capital is rome")
    result = cli(
        ["qa", "-m", str(tiny_classifier_dir), "--question", "what?", "--context", str(tmp_path / "doc.txt")]
    )
    assert result.code == 2 and "no trained question-answering head" in result.stderr


def test_squad_v2_data_switches_to_no_answer_scoring(cli, tiny_bert_dir, tmp_path):
    rng = random.Random(2)
    rows = [_record(rng, i) for i in range(24)]
    for row in rows[::2]:
        row["id"] = int(row["id"][1:])  # integer ids, as JSONL exports often have
    for i in range(8):  # unanswerable: a context without the pattern
        context = " ".join(rng.choice(FILLER) for _ in range(20))
        empty = {"text": [], "answer_start": []}
        rows.append({"id": f"n{i}", "question": "what is the capital?", "context": context, "answers": empty})
    (tmp_path / "v2.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["finetune", "--task", "qa", "-m", str(tiny_bert_dir), "--train-data", str(tmp_path / "v2.jsonl")]
    args += ["--eval-data", str(tmp_path / "v2.jsonl"), "--max-length", "32", "--doc-stride", "8"]
    args += ["--max-steps", "2", "--batch-size", "8", "-o", str(tmp_path / "run")]
    result = cli(args)
    assert result.code == 0, result.stderr
    assert "no-answer" in result.stderr
    scores = json.loads((tmp_path / "run/metrics.json").read_text())["eval"]
    assert {"eval_exact_match", "eval_f1", "eval_HasAns_f1", "eval_NoAns_f1"} <= set(scores)


def test_inference_accepts_the_windows_training_accepts(cli, qa_run, tmp_path):
    """finetune --task qa trains with any stride below the room left for the context (run_qa's
    rule); bgcli qa and eval take the same windows (they refused a stride of half the window)."""
    folder, _ = qa_run
    context = tmp_path / "doc.txt"
    context.write_text(" ".join(["the story was slow"] * 30) + " the capital is rome and the end")
    args = ["qa", "-m", str(folder / "run"), "--question", "what is the capital?", "--context", str(context)]
    result = cli([*args, "--max-length", "32", "--doc-stride", "16", "-f", "jsonl"])
    assert result.code == 0, result.stderr
    evaluated = cli(
        ["eval", "-m", str(folder / "run"), "--data", str(folder / "dev.jsonl"), "--doc-stride", "16"]
    )
    assert evaluated.code == 0, evaluated.stderr
    refused = cli([*args, "--max-length", "32", "--doc-stride", "29"])
    assert refused.code == 2 and "--doc-stride 29 must be less than the 29 tokens" in refused.stderr


def test_a_question_longer_than_the_window_is_a_bad_record_not_a_failed_batch(cli, qa_run):
    folder, _ = qa_run
    long_context = " ".join(["the story was slow"] * 20) + " the capital is rome"
    rows = [
        {"id": 1, "question": "what is the capital?", "context": long_context},
        {
            "id": 2,
            "question": " ".join(["what is the capital of this country"] * 10),
            "context": long_context,
        },
        {"id": 3, "question": "what is the capital?", "context": "the capital is paris"},
    ]
    stdin = "".join(json.dumps(r) + "\n" for r in rows)
    result = cli(
        ["qa", "-m", str(folder / "run"), "--max-length", "32", "--doc-stride", "8", "-f", "jsonl"], stdin
    )
    assert result.code == 1
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in out] == [1, 2, 3]
    assert "answer" in out[0] and "answer" in out[2]
    assert out[1]["line"] == 2 and "leaves 0 of the 32-token window" in out[1]["error"]
    assert "line 2: the question is" in result.stderr and "Traceback" not in result.stderr


def test_context_from_a_process_substitution(qa_run):
    """`--context <(cmd)` is a named pipe, not a regular file: it is read like one."""
    import os
    import subprocess

    from .conftest import ROOT

    folder, _ = qa_run
    script = (
        f'"{sys.executable}" -m bertgpt_cli qa -m "{folder / "run"}" --question "what is the capital?" '
        '--context <(echo "the capital is rome and the river") -f jsonl'
    )
    result = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert "answer" in json.loads(result.stdout)
