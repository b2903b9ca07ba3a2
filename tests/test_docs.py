"""The docs stay true: every `bash` example in README.md and docs/ runs (against tiny fixtures
or the built-in assets, with fast training settings), docs/reference.md matches the typed
configs, and every command's --help ends with examples and shows no type tags."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import ROOT

DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "CONTRIBUTING.md"]
SKIP_MARK = re.compile(r"<!--\s*example:\s*skip:\s*(.+?)\s*-->")
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass
class Example:
    source: str
    line: int
    code: str
    skip: str | None

    @property
    def id(self) -> str:
        return f"{self.source}:{self.line}"


def doc_examples() -> list[Example]:
    """Every ```bash block, with the skip reason of an `<!-- example: skip: ... -->` line
    right above it (blank lines allowed in between)."""
    examples = []
    for path in DOC_FILES:
        if path.name == "reference.md":
            continue  # generated; its examples are the commands' --help examples
        lines = path.read_text().splitlines()
        index = 0
        while index < len(lines):
            fence = FENCE.match(lines[index])
            if not fence:
                index += 1
                continue
            end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
            if fence.group(1) == "bash":
                skip = _skip_reason(lines, index)
                code = "\n".join(lines[index + 1 : end])
                examples.append(Example(str(path.relative_to(ROOT)), index + 1, code, skip))
            index = end + 1
    return examples


def _skip_reason(lines: list[str], fence_index: int) -> str | None:
    above = fence_index - 1
    while above >= 0 and not lines[above].strip():
        above -= 1
    match = SKIP_MARK.search(lines[above]) if above >= 0 else None
    return match.group(1) if match else None


# Examples may name Hub models; here they run on tiny stand-ins (same architecture family).
# Fixture run dirs exist under the names the docs use, unless the example itself writes there.
HARNESS = r"""
set -euo pipefail
bgcli() {
  local args=() arg
  for arg in "$@"; do
    case "$arg" in
      gpt2) arg="$TINY_GPT2" ;;
      bert-base-uncased) arg="$TINY_MLM" ;;
    esac
    args+=("$arg")
  done
  if [ "$1" = finetune ]; then  # fast settings: the example's flags, then a few steps
    args+=(--max-steps 2 --batch-size 4 --max-train-samples 24 --max-eval-samples 8)
    case " $* " in *" --task clm "*|*" --task mlm "*) args+=(--block-size 16) ;; esac
  fi
  if [ "$1" = pretrain ] || [ "$1" = tokenizer ]; then
    # a small corpus: both prepare their whole corpus first (data specs are tested elsewhere)
    for i in "${!args[@]}"; do
      case "${args[$i]}" in movie-reviews*) args[$i]="$PWD/documents.jsonl" ;; esac
    done
  fi
  if [ "$1" = pretrain ]; then  # the smallest size, a few steps
    args+=(--size tiny --max-steps 2 --batch-size 4 --max-train-samples 24 --max-eval-samples 8)
    args+=(--block-size 32)
  fi
  "$BGCLI_PYTHON" -m bertgpt_cli "${args[@]}"
}
"""


@pytest.fixture(scope="module")
def fixture_runs(
    tiny_classifier_dir, tiny_multilabel_dir, tiny_bert_dir, tiny_gpt2_dir, tiny_ner_dir, tiny_qa_dir
) -> dict[str, Path]:
    return {
        "rt": tiny_classifier_dir,
        "rt-long": tiny_classifier_dir,
        "qa": tiny_qa_dir,
        "ner": tiny_ner_dir,
        "genres": tiny_multilabel_dir,
        "mlm": tiny_bert_dir,
        "movies-minilm-mlm": tiny_bert_dir,
        "clm": tiny_gpt2_dir,
    }


def write_inputs(folder: Path) -> None:
    reviews = ["a gorgeous, witty movie", "dull and lifeless", "the best film of the year", "boring plot"] * 4
    (folder / "reviews.txt").write_text("\n".join(reviews) + "\n")
    (folder / "sentences.txt").write_text("the movie was [MASK] .\ni loved the [MASK] .\n")
    (folder / "prompts.txt").write_text("the movie was\nonce upon a time\n")
    (folder / "corpus.txt").write_text("\n".join(reviews * 3) + "\n")
    sentences = [
        "the story follows a family across three summers by the sea",
        "the acting is warm and the jokes land more often than not",
        "sadly the last act drags on for far too long before the end",
        "the music, the light and the small town all feel very real",
    ]
    documents = [". ".join(sentences[i % 4 :] + sentences[: i % 4]) + "." for i in range(24)]
    (folder / "documents.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in documents))
    (folder / "reviews.jsonl").write_text(
        "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(reviews))
    )
    rows = "".join(f'"{t}",{"positive" if i % 2 == 0 else "negative"}\n' for i, t in enumerate(reviews))
    (folder / "reviews.csv").write_text("text,sentiment\n" + rows)
    (folder / "test.csv").write_text("text,sentiment\n" + rows)
    news = [
        "Angela Merkel met Emmanuel Macron in Paris.",
        "The United Nations office in New York hired John Smith.",
    ]
    (folder / "news.jsonl").write_text(
        "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(news))
    )
    (folder / "news.txt").write_text("\n".join(news) + "\n")
    tagged = [("Angela", "B-PER"), ("Merkel", "I-PER"), ("met", "O"), ("Macron", "B-PER"), ("in", "O")]
    tagged += [("Paris", "B-LOC"), (".", "O")]
    conll = "".join(f"{word} {tag}\n" for word, tag in tagged) + "\n"
    (folder / "train.conll").write_text(conll * 12)
    (folder / "dev.conll").write_text(conll * 2)
    article = "Super Bowl 50 was played on February 7, 2016. The Denver Broncos won the game 24-10."
    (folder / "article.txt").write_text(article + "\n")
    questions = ["Who won Super Bowl 50?", "When was the game played?"]
    (folder / "questions.txt").write_text("\n".join(questions) + "\n")
    (folder / "questions.jsonl").write_text(
        "".join(
            json.dumps({"id": i, "question": q, "context": article}) + "\n" for i, q in enumerate(questions)
        )
    )
    genres = [["comedy"], ["drama"], ["comedy", "romance"], []]
    (folder / "movies.jsonl").write_text(
        "".join(json.dumps({"text": t, "genres": genres[i % 4]}) + "\n" for i, t in enumerate(reviews))
    )


EXAMPLES = doc_examples()


def test_docs_have_examples_and_every_skip_says_why():
    assert len([e for e in EXAMPLES if e.skip is None]) >= 6
    for example in EXAMPLES:
        assert example.skip is None or len(example.skip) > 5, example.id


@pytest.mark.assets
@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.skip is None], ids=lambda e: e.id)
def test_doc_example_runs(example, tmp_path, fixture_runs, tiny_gpt2_dir, tiny_bert_dir):
    if "jq " in example.code and shutil.which("jq") is None:
        pytest.skip("jq is not installed")
    write_inputs(tmp_path)
    (tmp_path / "runs").mkdir()
    for name, folder in fixture_runs.items():
        if not re.search(rf"(-o|--output) runs/{re.escape(name)}\b", example.code):
            (tmp_path / "runs" / name).symlink_to(folder)
    env = {
        **os.environ,
        "BGCLI_PYTHON": sys.executable,
        "TINY_GPT2": str(tiny_gpt2_dir),
        "TINY_MLM": str(tiny_bert_dir),
        "PYTHONPATH": str(ROOT),
        "NO_COLOR": "1",
    }
    result = subprocess.run(
        ["bash", "-c", HARNESS + example.code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (
        f"{example.id} failed:\n{example.code}\n--- stderr:\n{result.stderr[-3000:]}"
    )
    assert result.stdout.strip(), f"{example.id} printed nothing on stdout"
    for line in result.stdout.splitlines():
        if line.startswith("{"):
            json.loads(line)  # a record in a pipe is one JSON object per line


def test_reference_is_current():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_reference.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr  # names the command that regenerates it


def test_reference_lists_every_flag():
    from bertgpt_cli.cli.app import COMMAND_MODULES
    from bertgpt_cli.options import config_fields, flag_name

    reference = (ROOT / "docs" / "reference.md").read_text()
    for module in COMMAND_MODULES:
        assert f"## bgcli {module.NAME}" in reference
        for field in config_fields(module.CONFIG):
            if field.metadata["kind"] == "option":
                assert f"`{flag_name(field)}" in reference, (module.NAME, field.name)


@pytest.mark.parametrize(
    "command",
    [
        "finetune",
        "fill-mask",
        "generate",
        "classify",
        "ner",
        "qa",
        "embed",
        "search",
        "env",
        "models",
        "tokenize",
        "recipes",
        "pretrain",
        "tokenizer",
    ],
)
def test_help_ends_with_examples_and_shows_no_type_tags(cli, command):
    result = cli([command, "--help"])
    assert result.code == 0
    text = result.stdout
    assert "Examples:" in text and f"bgcli {command}" in text.split("Examples:")[1]
    for tag in ("<bool>", "<str>", "<int>", "<float>", "<list[str]>"):
        assert tag not in text, (command, tag)
