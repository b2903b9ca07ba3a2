"""Training speed: `bgcli finetune` against plain Trainer scripts with the transformers
example defaults (bench/plain_trainer.py), in one run, same model, data, batch, learning
rate and steps/epochs.

- classification (minilm, 2,000 Rotten Tomatoes training reviews, 1 epoch): against the
  run_glue defaults (padding to 128, fp32) and against the same script with dynamic padding
  and length-grouped batches; quality = accuracy on the fixed 1,066-review test split.
- mlm (minilm) / clm (smollm2): against run_mlm / run_clm defaults; throughput = steps x
  batch x block (packed blocks: every token is real) / the Trainer's train_runtime; quality =
  both final models scored the same way on the same held-out blocks (token-level loss; MLM
  with the fixed eval masks), so "no worse eval loss" compares like with like.

MFU = useful model FLOPs per second (6 x parameters touched per real token; padding not
counted) / the bf16 matmul peak measured here at the start of the run.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from bertgpt_cli.training.flops import matmul_peak_gflops

from .assets import bench_dir
from .runner import Result

CLASSIFICATION = {"model": "minilm", "train": 2000, "epochs": 1, "batch": 32, "lr": 1e-4}
SETUPS = {
    "mlm": {"model": "minilm", "steps": 30, "batch": 32, "block": 128, "lr": 2e-4},
    "clm": {"model": "smollm2", "steps": 12, "batch": 8, "block": 128, "lr": 1e-4},
}
TRAIN_TEXTS, EVAL_TEXTS = 3000, 300


def texts_files() -> tuple[Path, Path]:
    """Reviews from both built-in sources (seed-0 shuffle): train texts and held-out texts."""
    folder = bench_dir()
    train, held_out = folder / "train-texts.jsonl", folder / "eval-texts.jsonl"
    if not train.is_file():
        from bertgpt_cli.io.data import load_data

        texts = load_data("movie-reviews@train").shuffle(seed=0)["text"][: TRAIN_TEXTS + EVAL_TEXTS]
        train.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:TRAIN_TEXTS]))
        held_out.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[TRAIN_TEXTS:]))
    return train, held_out


def run_ours(task: str, setup: dict, train: Path, out: Path) -> dict:
    command = [sys.executable, "-m", "bertgpt_cli", "finetune", "--task", task, "-m", setup["model"]]
    command += ["--train-data", str(train), "--eval-split", "0", "--max-steps", str(setup["steps"])]
    command += ["--batch-size", str(setup["batch"]), "--block-size", str(setup["block"])]
    command += ["--max-length", str(setup["block"]), "--lr", str(setup["lr"]), "--warmup", "0"]
    command += ["--weight-decay", "0", "--output", str(out), "--overwrite", "--quiet", "--format", "jsonl"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "metrics.json").read_text())["train"]


def run_plain(task: str, setup: dict, train: Path, out: Path) -> dict:
    from bertgpt_cli.io.assets import BUILTIN_MODELS

    script = Path(__file__).with_name("plain_trainer.py")
    command = [sys.executable, str(script), "--task", task]
    command += ["--model", str(BUILTIN_MODELS[setup["model"]].model_dir()), "--data", str(train)]
    command += ["--out", str(out), "--steps", str(setup["steps"]), "--batch-size", str(setup["batch"])]
    command += ["--block-size", str(setup["block"]), "--lr", str(setup["lr"])]
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=os.environ)
    return json.loads(done.stdout.strip().splitlines()[-1])


def eval_loss(task_name: str, model_dir: Path, held_out: Path, block: int) -> float:
    """Token-level loss of a saved model on the held-out blocks, fp32, the same for both."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bertgpt_cli.io.data import load_data
    from bertgpt_cli.models.resolution import resolve_model
    from bertgpt_cli.training.finetune import FinetuneConfig
    from bertgpt_cli.training.tasks import TASKS

    config = FinetuneConfig(task=task_name, model=str(model_dir), train_data="-", block_size=block)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    task = TASKS[task_name](config, tokenizer)
    if task_name == "mlm":
        model = task.model(resolve_model(str(model_dir)))  # with the masked-positions projection
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir)
    records, _ = task.prepare(load_data(str(held_out)), {})
    blocks = task.finalize(records, "eval")
    collate, totals = task.collator(), torch.zeros(2)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(blocks), 16):
            batch = collate([blocks[i] for i in range(start, min(start + 16, len(blocks)))])
            _, stats, _ = task.prediction_step(model, batch)
            totals += stats[:, :2].sum(dim=0)
    return round((totals[0] / totals[1]).item(), 4)


def flops_per_token(task: str, model_dir: Path) -> float:
    """6 x the parameters each real token goes through in training (forward + backward).
    Embedding lookups cost nothing; the vocabulary projection counts where it is needed: every
    token for clm, the 15% masked ones for mlm, none for classification."""
    from safetensors import safe_open
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    with safe_open(str(model_dir / "model.safetensors"), "pt") as weights:
        total = sum(math.prod(weights.get_slice(n).get_shape()) for n in weights.keys() if "embed" not in n)
    projection = config.hidden_size * config.vocab_size
    share = {"classification": 0.0, "mlm": 0.15, "clm": 1.0}[task]
    return 6 * (total + share * projection)


def classification_files() -> tuple[Path, Path]:
    folder = bench_dir()
    train, test = folder / "rt-train-2000.jsonl", folder / "rt-test.jsonl"
    if not train.is_file():
        from bertgpt_cli.io.data import load_data

        rows = load_data("movie-reviews:rotten_tomatoes@train").shuffle(seed=0)
        rows = rows.select(range(CLASSIFICATION["train"]))
        train.write_text("".join(json.dumps({"text": r["text"], "label": r["label"]}) + "\n" for r in rows))
        test_rows = load_data("movie-reviews:rotten_tomatoes@test")
        test.write_text(
            "".join(json.dumps({"text": r["text"], "label": r["label"]}) + "\n" for r in test_rows)
        )
    return train, test


def mean_tokens(model_dir: Path, path: Path, max_length: int = 128) -> float:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = [json.loads(line)["text"] for line in path.read_text().splitlines()]
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    return sum(lengths) / len(lengths)


def classification_rows(peak: float) -> list[Result]:
    from bertgpt_cli.io.assets import BUILTIN_MODELS

    setup = CLASSIFICATION
    train, test = classification_files()
    model_dir = BUILTIN_MODELS[setup["model"]].model_dir()
    out = bench_dir() / "train-classification-ours"
    command = [
        sys.executable,
        "-m",
        "bertgpt_cli",
        "finetune",
        "-m",
        setup["model"],
        "--train-data",
        str(train),
    ]
    command += ["--test-data", str(test), "--eval-split", "0", "--epochs", str(setup["epochs"])]
    command += ["--batch-size", str(setup["batch"]), "--lr", str(setup["lr"]), "--warmup", "0"]
    command += ["--weight-decay", "0", "--output", str(out), "--overwrite", "--quiet", "--format", "jsonl"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    ours_metrics = json.loads((out / "metrics.json").read_text())
    ours_rate = ours_metrics["train"]["train_samples_per_second"]
    ours_accuracy = ours_metrics["test"]["test_accuracy"]
    token_flops = flops_per_token("classification", model_dir) * mean_tokens(model_dir, train)
    results = []
    for label, extra in (
        ("run_glue defaults (pad to 128, fp32)", []),
        ("dynamic padding + length grouping, fp32", ["--padding", "dynamic", "--group-by-length"]),
    ):
        script = Path(__file__).with_name("plain_trainer.py")
        command = [sys.executable, str(script), "--task", "classification", "--model", str(model_dir)]
        command += ["--data", str(train), "--test", str(test), "--out", str(bench_dir() / "train-cls-plain")]
        command += ["--steps", "0", "--epochs", str(setup["epochs"]), "--batch-size", str(setup["batch"])]
        command += ["--lr", str(setup["lr"]), *extra]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        plain = json.loads(done.stdout.strip().splitlines()[-1])
        plain_rate = plain["train_samples_per_second"]
        results.append(
            Result(
                name=f"finetune classification vs {'run_glue' if not extra else 'dynamic padding'}",
                ours=ours_rate,
                baseline=plain_rate,
                unit="samples/s",
                ratio=round(ours_rate / plain_rate, 2),
                identical=None,
                baseline_name=f"plain Trainer script, {label}",
                details={
                    **setup,
                    "test_accuracy_ours": round(ours_accuracy, 4),
                    "test_accuracy_baseline": round(plain["test_accuracy"], 4),
                    "mfu_ours": round(ours_rate * token_flops / (peak * 1e9), 3),
                    "mfu_baseline": round(plain_rate * token_flops / (peak * 1e9), 3),
                    "bf16_matmul_peak_gflops": round(peak, 1),
                },
            )
        )
    return results


def run() -> list[Result]:
    """BENCH_TRAINING=classification,mlm,clm (the default: all) picks the rows to run."""
    chosen = os.environ.get("BENCH_TRAINING", "classification,mlm,clm").split(",")
    peak = matmul_peak_gflops()
    results = classification_rows(peak) if "classification" in chosen else []
    train, held_out = texts_files()
    for task, setup in SETUPS.items():
        if task not in chosen:
            continue
        tokens = setup["steps"] * setup["batch"] * setup["block"]
        ours_dir, plain_dir = bench_dir() / f"train-{task}-ours", bench_dir() / f"train-{task}-plain"
        ours, plain = run_ours(task, setup, train, ours_dir), run_plain(task, setup, train, plain_dir)
        ours_rate, plain_rate = tokens / ours["train_runtime"], tokens / plain["train_runtime"]
        from bertgpt_cli.io.assets import BUILTIN_MODELS

        token_flops = flops_per_token(task, BUILTIN_MODELS[setup["model"]].model_dir())
        details = {
            **setup,
            "mfu_ours": round(ours_rate * token_flops / (peak * 1e9), 3),
            "mfu_baseline": round(plain_rate * token_flops / (peak * 1e9), 3),
            "eval_loss_ours": eval_loss(task, ours_dir, held_out, setup["block"]),
            "eval_loss_baseline": eval_loss(task, plain_dir, held_out, setup["block"]),
            "ours_train_runtime_s": ours["train_runtime"],
            "baseline_train_runtime_s": plain["train_runtime"],
        }
        results.append(
            Result(
                name=f"finetune --task {task} ({setup['model']}) train tokens/s",
                ours=round(ours_rate, 1),
                baseline=round(plain_rate, 1),
                unit="tok/s",
                ratio=round(ours_rate / plain_rate, 2),
                identical=None,
                baseline_name=f"plain Trainer script, run_{task} defaults (fp32, stock loss)",
                details=details,
            )
        )
    return results
