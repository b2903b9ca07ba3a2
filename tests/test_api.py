"""bertgpt_cli.api: one function per command, returning what the command prints (JSON Lines
records, the run dir, the report), raising BgcliError instead of exiting."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bertgpt_cli import api
from bertgpt_cli.errors import BgcliError, UsageError

from .conftest import ROOT, write_inputs
from .test_finetune import NEGATIVE, POSITIVE, write_csv


def jsonl(result) -> list[dict]:
    assert result.code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_importing_the_api_imports_neither_typer_nor_torch():
    code = (
        "import sys\n"
        "import bertgpt_cli.api\n"
        "print(','.join(m for m in ('typer', 'torch', 'transformers', 'datasets') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == ""


def test_classify_equals_the_command(cli, tiny_classifier_dir):
    texts = ["a gorgeous movie", "dull and flat"]
    expected = jsonl(
        cli(["classify", "-m", str(tiny_classifier_dir), "--format", "jsonl", "--all-scores", *texts])
    )
    assert api.classify(texts, model=str(tiny_classifier_dir), all_scores=True) == expected


def test_dicts_are_jsonl_records_and_bad_ones_stay_in_place(cli, tiny_classifier_dir):
    lines = [{"id": 1, "text": "a gorgeous movie"}, {"id": 2, "body": "no text"}, {"id": 3, "text": "fine"}]
    stdin = "".join(json.dumps(line) + "\n" for line in lines)
    expected = cli(["classify", "-m", str(tiny_classifier_dir), "--format", "jsonl"], input=stdin)
    assert expected.code == 1  # the command exits 1 for the bad record; the API returns it in place
    records = api.classify(lines, model=str(tiny_classifier_dir))
    assert records == [json.loads(line) for line in expected.stdout.splitlines()]
    assert records[1]["line"] == 2 and "error" in records[1] and records[2]["id"] == 3


def test_fill_mask_generate_ner_tokenize_equal_their_commands(
    cli, tiny_bert_dir, tiny_gpt2_dir, tiny_ner_dir
):
    cases = [
        ("fill-mask", api.fill_mask, str(tiny_bert_dir), ["the movie was [MASK]."], {"top_k": 3}),
        ("generate", api.generate, str(tiny_gpt2_dir), ["once upon", "a time"], {"max_new_tokens": 5}),
        ("ner", api.ner, str(tiny_ner_dir), ["angela merkel met macron in paris"], {}),
        ("tokenize", api.tokenize, str(tiny_bert_dir), ["unbelievably long words"], {}),
    ]
    for command, function, model, texts, options in cases:
        flags = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
        expected = jsonl(cli([command, "-m", model, "--format", "jsonl", *flags, *texts]))
        assert function(texts, model=model, **options) == expected, command


def test_qa_with_records_and_with_a_shared_context(cli, tiny_qa_dir, tmp_path):
    context = tmp_path / "doc.txt"
    context.write_text("the capital is rome and the river is the tiber")
    expected = jsonl(
        cli(
            [
                "qa",
                "-m",
                str(tiny_qa_dir),
                "--format",
                "jsonl",
                "--question",
                "what is the capital?",
                "--context",
                str(context),
            ]
        )
    )
    assert api.qa(["what is the capital?"], model=str(tiny_qa_dir), context=str(context)) == expected
    records = api.qa(
        [{"question": "what is the capital?", "context": context.read_text()}], model=str(tiny_qa_dir)
    )
    assert records[0]["answer"] == expected[0]["answer"] and records[0]["start"] == expected[0]["start"]


def test_embed_and_search_equal_their_commands(cli, tiny_bert_dir, tmp_path):
    texts = ["a gorgeous movie", "dull and flat"]
    expected = jsonl(cli(["embed", "-m", str(tiny_bert_dir), "--format", "jsonl", *texts]))
    assert api.embed(texts, model=str(tiny_bert_dir)) == expected
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("great film\nboring plot\nlovely music\n")
    expected = jsonl(
        cli(["search", "-m", str(tiny_bert_dir), "--corpus", str(corpus), "--format", "jsonl", "film"])
    )
    assert api.search(["film"], model=str(tiny_bert_dir), corpus=str(corpus)) == expected


def test_finetune_then_evaluate_then_export(cli, tiny_bert_dir, tmp_path):
    rows = [(f"{(POSITIVE if i % 2 else NEGATIVE)[i % 5]} {i}", "pos" if i % 2 else "neg") for i in range(40)]
    train = write_csv(tmp_path / "train.csv", rows)
    run_dir = api.finetune(
        model=str(tiny_bert_dir),
        train_data=str(train),
        epochs=1,
        batch_size=8,
        output=str(tmp_path / "run"),
        precision="fp32",
        quiet=True,
    )
    assert run_dir == tmp_path / "run" and (run_dir / "metrics.json").is_file()
    report = api.evaluate(str(run_dir), data=str(train), quiet=True)
    assert report == jsonl(cli(["eval", "-m", str(run_dir), "--data", str(train), "--format", "jsonl"]))[0]
    pytest.importorskip("onnxruntime")
    exported = api.export(model=str(run_dir), output=str(tmp_path / "onnx"), quiet=True)
    assert (exported / "model.onnx").is_file()
    assert api.classify(["great film"], model=str(exported))[0]["label"] in ("pos", "neg")


def test_data_check_returns_the_report(cli, tmp_path):
    rows = [("great film", "pos"), ("great film", "pos"), ("boring plot", "neg")]
    train = write_csv(tmp_path / "train.csv", rows)
    report = api.data_check(train_data=str(train), quiet=True)
    expected = json.loads(cli(["data", "check", "--train-data", str(train), "--format", "json"]).stdout)
    assert report == expected and report["splits"]["train"]["duplicate_texts"] == 1


def test_pretrain_returns_the_run_dir(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"{POSITIVE[i % 5]} and {NEGATIVE[i % 5]} number {i}" for i in range(60)))
    run_dir = api.pretrain(
        arch="gpt2",
        size="tiny",
        objective="clm",
        train_data=str(corpus),
        vocab_size=300,
        max_steps=2,
        batch_size=4,
        block_size=32,
        output=str(tmp_path / "pre"),
        quiet=True,
    )
    assert (run_dir / "metrics.json").is_file()


def test_arguments_are_checked_as_flags_are(tiny_classifier_dir):
    with pytest.raises(UsageError, match="unknown argument"):
        api.classify(["x"], model=str(tiny_classifier_dir), topk=3)
    with pytest.raises(UsageError, match="--threshold must be"):
        api.classify(["x"], model=str(tiny_classifier_dir), threshold=2)
    with pytest.raises(UsageError, match="pass the classifier"):
        api.classify(["x"])
    with pytest.raises(BgcliError):
        api.classify(["x"], model=str(ROOT / "no-such-model"))


def python_examples() -> list[tuple[int, str]]:
    lines = (ROOT / "docs" / "api.md").read_text().splitlines()
    blocks, index = [], 0
    while index < len(lines):
        if lines[index].strip() == "```python":
            end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
            blocks.append((index + 1, "\n".join(lines[index + 1 : end])))
            index = end
        index += 1
    return blocks


@pytest.mark.parametrize("line,code", python_examples(), ids=lambda v: str(v) if isinstance(v, int) else "")
def test_api_doc_examples_run(line, code, tmp_path, fixture_runs):
    write_inputs(tmp_path)
    (tmp_path / "runs").mkdir()
    for name, folder in fixture_runs.items():
        (tmp_path / "runs" / name).symlink_to(folder)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"docs/api.md:{line} failed:\n{code}\n--- stderr:\n{result.stderr[-3000:]}"
    assert result.stdout.strip() or "classify(" in code, f"docs/api.md:{line} printed nothing"
