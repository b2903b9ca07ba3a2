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

import pytest

from .conftest import ROOT, write_inputs

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
    from bertgpt_cli.cli.app import command_modules
    from bertgpt_cli.options import config_fields, flag_name

    reference = (ROOT / "docs" / "reference.md").read_text()
    for module in command_modules():
        if hasattr(module, "APP"):  # groups: their subcommands have sections of their own
            continue
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
