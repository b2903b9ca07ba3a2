"""Training memory: the process's RSS through a run (`rss_mb` in every line of the run's log
history) for the squad-minilm recipe and the BERT-mini pre-training recipe, STEPS steps each.
The number is the peak RSS after step 500 divided by the RSS at step 100 (goal: <= 1.2x, so a
run that fits at step 100 fits to the end). The baseline is the same run with every batch
length a shape of its own (what bgcli did before rounding lengths: see engine.RoundedLengths).

    python -m bench training_memory      # ~50 min on 2 cores (4 runs)
    BENCH_MEMORY_VARIANTS=ours python -m bench training_memory   # ours only, ~25 min
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .assets import bench_dir
from .runner import Result

STEPS = 600
RUNS = {
    "squad-minilm": [
        "finetune", "--recipe", "squad-minilm", "--max-train-samples", "24000", "--eval-data",
        "squad@validation", "--max-eval-samples", "200", "--eval-every", "300",
    ],
    "reviews-bert-mini-pretrain": [
        "pretrain", "--recipe", "reviews-bert-mini-pretrain", "--eval-every", "300", "--eval-before",
    ],
}  # fmt: skip
# The baseline: lengths as the collator leaves them.
UNROUNDED = (
    "import sys\n"
    "import bertgpt_cli.training.engine as engine\n"
    "engine.rounded_length = lambda length: length\n"
    "from bertgpt_cli.cli.app import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def rss_by_step(run_dir: Path) -> dict[int, float]:
    steps = {}
    for line in (run_dir / "log_history.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if "rss_mb" in entry:
            steps[entry["step"]] = max(entry["rss_mb"], steps.get(entry["step"], 0.0))
    return steps


def growth(run_dir: Path) -> tuple[float, float, float]:
    """(RSS at step 100, peak RSS after step 500, their ratio)."""
    steps = rss_by_step(run_dir)
    at_100 = steps[min(steps, key=lambda s: abs(s - 100))]
    late = max(v for s, v in steps.items() if s >= 500)
    return at_100, late, round(late / at_100, 2)


def run_once(name: str, args: list[str], out: Path, rounded: bool) -> Path:
    prefix = [sys.executable, "-m", "bertgpt_cli"] if rounded else [sys.executable, "-c", UNROUNDED]
    command = [*prefix, *args, "--max-steps", str(STEPS), "-o", str(out), "--overwrite", "--quiet"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return out


def run() -> list[Result]:
    variants = os.environ.get("BENCH_MEMORY_VARIANTS", "ours,baseline").split(",")
    results = []
    for name, args in RUNS.items():
        folder = bench_dir() / "memory"
        ours = growth(run_once(name, args, folder / f"{name}-rounded", True)) if "ours" in variants else None
        base = (
            growth(run_once(name, args, folder / f"{name}-plain", False)) if "baseline" in variants else None
        )
        results.append(
            Result(
                name=f"training memory: {name}",
                ours=ours[2] if ours else float("nan"),
                baseline=base[2] if base else float("nan"),
                unit="x",
                ratio=round(base[2] / ours[2], 2) if ours and base else float("nan"),
                identical=None,
                baseline_name="every batch length its own shape",
                details={
                    "steps": STEPS,
                    "ours_rss_step100_mb": ours[0] if ours else None,
                    "ours_peak_after_500_mb": ours[1] if ours else None,
                    "baseline_rss_step100_mb": base[0] if base else None,
                    "baseline_peak_after_500_mb": base[1] if base else None,
                },
            )
        )
    return results
