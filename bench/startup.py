"""Start-up: `bgcli --help` vs `transformers --help` (what a shell user waits for), and a
one-text `bgcli classify -m RUN_DIR` against a five-line `pipeline()` script on the same
model (whole processes: imports, model load, one prediction)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .runner import Result, compare_times

BIN = Path(sys.executable).parent


def run_help(command: list[str]) -> None:
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


PIPELINE_SCRIPT = """
import sys
from transformers import pipeline
classifier = pipeline("text-classification", model=sys.argv[1], device="cpu")
print(classifier(sys.argv[2]))
"""
TEXT = "A gorgeous, witty, seductive movie."


def one_text_rows() -> list[Result]:
    from .assets import minilm_with_head

    model = str(minilm_with_head("classification"))
    return [
        compare_times(
            "startup: one-text classify",
            lambda: run_help([str(BIN / "bgcli"), "classify", "-m", model, TEXT, "-f", "jsonl"]),
            lambda: run_help([sys.executable, "-c", PIPELINE_SCRIPT, model, TEXT]),
            baseline_name="5-line pipeline() script",
            repeats=5,
        )
    ]


def run() -> list[Result]:
    return one_text_rows() + [
        compare_times(
            "startup: --help",
            lambda: run_help([str(BIN / "bgcli"), "--help"]),
            lambda: run_help([str(BIN / "transformers"), "--help"]),
            baseline_name="transformers --help",
            repeats=7,
        ),
        compare_times(
            "startup: subcommand --help",
            lambda: run_help([str(BIN / "bgcli"), "tokenize", "--help"]),
            lambda: run_help([str(BIN / "transformers"), "chat", "--help"]),
            baseline_name="transformers chat --help",
            repeats=7,
        ),
        # The lazy command table: `classify --help` imports classify's modules only.
        compare_times(
            "startup: classify --help",
            lambda: run_help([str(BIN / "bgcli"), "classify", "--help"]),
            lambda: run_help([str(BIN / "transformers"), "--help"]),
            baseline_name="transformers --help",
            repeats=7,
        ),
    ]
