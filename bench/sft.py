"""Chat / instruction fine-tuning (issue 28), side by side in one run:

- reference: bgcli `finetune --task sft --lora` vs the stack users would write, TRL's
  SFTTrainer + peft's LoraConfig: same model (smollm2), data (squad-instruct), max length,
  batch, steps, learning rate and LoRA settings; trained (non-padding) tokens/s, and the
  held-out assistant loss of both final models scored by the same `bgcli eval --task sft`.
- memory: peak RSS of LoRA SFT vs full fine-tuning of smollm2, same batch and length.
- quality (by name: ~45 min): the squad-smollm2-lora recipe, then exact match / F1 of greedy
  answers to 500 SQuAD dev questions it never saw, next to zero-shot smollm2 on the same prompts.

    python -m bench sft              # reference + memory, ~12 min on 2 cores
    python -m bench sft_quality      # the recipe + both evaluations
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .assets import bench_dir
from .runner import Result, bgcli, run_offline

STEPS = 40
BATCH, MAX_LENGTH, LR = 4, 512, 3e-4
LORA = {"r": 16, "alpha": 32, "dropout": 0.05}  # the squad-smollm2-lora recipe's settings
TRAIN_ROWS, HELD_OUT_ROWS, DEV_QUESTIONS = 2000, 200, 500


def sft_dir() -> Path:
    folder = bench_dir() / "sft"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def data_files(folder: Path) -> tuple[Path, Path, Path]:
    """Training rows and held-out rows from squad-instruct@train (disjoint), and 500 random dev
    questions (seed 0): JSONL files both stacks read."""
    from bertgpt_cli.io.data import load_data

    train, held, dev = folder / "train.jsonl", folder / "held_out.jsonl", folder / "dev500.jsonl"
    if not dev.is_file():
        rows = load_data("squad-instruct@train").shuffle(seed=0)
        rows.select(range(TRAIN_ROWS)).to_json(train)
        rows.select(range(TRAIN_ROWS, TRAIN_ROWS + HELD_OUT_ROWS)).to_json(held)
        load_data("squad-instruct@validation").shuffle(seed=0).select(range(DEV_QUESTIONS)).to_json(dev)
    return train, held, dev


TRL_SCRIPT = r"""
import json, sys, time
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

model_dir, train_file, out, steps, batch, max_length, lr, r, alpha, dropout = sys.argv[1:11]
rows = load_dataset("json", data_files=train_file, split="train")
# TRL's conversational prompt-completion layout: the chat template renders both; the loss
# covers the completion only (completion_only_loss, TRL's default for this layout).
rows = rows.map(
    lambda x: {"prompt": [{"role": "user", "content": x["prompt"]}],
               "completion": [{"role": "assistant", "content": x["completion"]}]},
    remove_columns=rows.column_names,
)
tokenizer = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir)
args = SFTConfig(
    output_dir=out, max_steps=int(steps), per_device_train_batch_size=int(batch), max_length=int(max_length),
    learning_rate=float(lr), warmup_steps=0.05, weight_decay=0.0, lr_scheduler_type="linear", bf16=True,
    use_cpu=True, report_to="none", logging_steps=10, save_strategy="no", seed=42,
    include_num_input_tokens_seen="non_padding", dataloader_num_workers=0,
    # TRL turns gradient checkpointing on by default; off here, as in the bgcli run, so both do
    # the same computation (TRL's default measured 130 tokens/s in the same setting).
    gradient_checkpointing=False,
)
lora = LoraConfig(r=int(r), lora_alpha=float(alpha), lora_dropout=float(dropout), target_modules="all-linear")
trainer = SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer, peft_config=lora)
result = trainer.train()
tokens = trainer.state.num_input_tokens_seen
merged = trainer.model.merge_and_unload()
merged.save_pretrained(out)
tokenizer.save_pretrained(out)
runtime = result.metrics["train_runtime"]
json.dump({"tokens_per_second": tokens / runtime, "train_runtime": runtime}, open(out + "/trl.json", "w"))
"""


def held_out_loss(model_dir: Path, held: Path) -> float:
    done = bgcli(["eval", "-m", str(model_dir), "--task", "sft", "--data", str(held), "--format", "jsonl"])
    return json.loads(done.stdout)["loss"]


def reference() -> Result:
    from bertgpt_cli.io.assets import BUILTIN_MODELS

    folder = sft_dir()
    train, held, _ = data_files(folder)
    model_dir = BUILTIN_MODELS["smollm2"].model_dir()
    ours_dir, trl_dir = folder / "ours", folder / "trl"
    bgcli(
        ["finetune", "--task", "sft", "-m", "smollm2", "--train-data", str(train), "--eval-split", "0"]
        + ["--lora", "--lora-r", str(LORA["r"]), "--lora-alpha", str(LORA["alpha"])]
        + ["--lora-dropout", str(LORA["dropout"]), "--lr", str(LR), "--batch-size", str(BATCH)]
        + [
            "--max-length",
            str(MAX_LENGTH),
            "--max-steps",
            str(STEPS),
            "--warmup",
            "0.05",
            "--weight-decay",
            "0",
        ]
        + ["--output", str(ours_dir), "--overwrite", "--quiet"]
    )
    ours = json.loads((ours_dir / "metrics.json").read_text())
    script = [sys.executable, "-c", TRL_SCRIPT, str(model_dir), str(train), str(trl_dir), str(STEPS)]
    script += [str(BATCH), str(MAX_LENGTH), str(LR), str(LORA["r"]), str(LORA["alpha"]), str(LORA["dropout"])]
    run_offline(script, "TRL reference")
    trl = json.loads((trl_dir / "trl.json").read_text())
    ours_tps = ours["train"]["train_tokens_per_second"]
    losses = {"ours": held_out_loss(ours_dir, held), "trl": held_out_loss(trl_dir, held)}
    return Result(
        name=f"sft lora smollm2 squad-instruct ({STEPS} steps x {BATCH}, max length {MAX_LENGTH})",
        ours=round(ours_tps, 1),
        baseline=round(trl["tokens_per_second"], 1),
        unit="trained tokens/s",
        ratio=round(ours_tps / trl["tokens_per_second"], 2),
        identical=None,
        baseline_name="TRL SFTTrainer + peft LoraConfig (completion-only loss)",
        details={
            "held_out_assistant_loss_ours": round(losses["ours"], 4),
            "held_out_assistant_loss_baseline": round(losses["trl"], 4),
            "loss_ratio": round(losses["ours"] / losses["trl"], 4),
            "peak_rss_mb_ours": ours["run"]["peak_memory_mb"],
            "train_runtime_s": {"ours": ours["train"]["train_runtime"], "trl": trl["train_runtime"]},
        },
    )


def memory() -> list[Result]:
    """Peak RSS of 10 steps: LoRA (dropout 0), LoRA + gradient checkpointing, full fine-tuning."""
    folder = sft_dir()
    train, _, _ = data_files(folder)
    peaks = {}
    variants = {
        "lora": ["--lora"],
        "lora-checkpointing": ["--lora", "--gradient-checkpointing"],
        "full": [],
    }
    for name, extra in variants.items():
        out = folder / f"memory-{name}"
        bgcli(
            ["finetune", "--task", "sft", "-m", "smollm2", "--train-data", str(train), "--eval-split", "0"]
            + ["--batch-size", str(BATCH), "--max-length", str(MAX_LENGTH), "--max-steps", "10"]
            + extra
            + ["--output", str(out), "--overwrite", "--quiet"]
        )
        metrics = json.loads((out / "metrics.json").read_text())
        peaks[name] = (metrics["run"]["peak_memory_mb"], metrics["train"]["train_tokens_per_second"])
    return [
        Result(
            name=f"sft smollm2 peak RSS, {name} vs full fine-tuning (batch {BATCH}, max length {MAX_LENGTH})",
            ours=peaks[name][0],
            baseline=peaks["full"][0],
            unit="MB",
            ratio=round(peaks["full"][0] / peaks[name][0], 2),
            identical=None,
            baseline_name="bgcli full fine-tuning, same run",
            details={
                "over_full": round(peaks[name][0] / peaks["full"][0], 3),
                "tokens_per_second": round(peaks[name][1], 1),
                "tokens_per_second_full": round(peaks["full"][1], 1),
            },
        )
        for name in ("lora", "lora-checkpointing")
    ]


def quality() -> list[Result]:
    folder = sft_dir()
    _, _, dev = data_files(folder)
    run_dir = folder / "squad-smollm2-lora"
    bgcli(["finetune", "--recipe", "squad-smollm2-lora", "--output", str(run_dir), "--overwrite", "--quiet"])
    scores = {}
    for name, model in (("trained", str(run_dir)), ("zero-shot", "smollm2")):
        done = bgcli(
            ["eval", "-m", model, "--task", "sft", "--data", str(dev), "--generate", "--max-new-tokens", "24"]
            + ["--batch-size", "16", "--precision", "bf16", "--format", "jsonl"]
        )
        scores[name] = json.loads(done.stdout)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return [
        Result(
            name=f"squad-smollm2-lora generative QA, {DEV_QUESTIONS} random dev questions (F1)",
            ours=round(scores["trained"]["generated_f1"], 1),
            baseline=round(scores["zero-shot"]["generated_f1"], 1),
            unit="F1",
            ratio=round(
                scores["trained"]["generated_f1"] / max(scores["zero-shot"]["generated_f1"], 1e-9), 2
            ),
            identical=None,
            baseline_name="zero-shot smollm2, same prompts",
            details={
                "exact_match_ours": round(scores["trained"]["generated_exact_match"], 1),
                "exact_match_baseline": round(scores["zero-shot"]["generated_exact_match"], 1),
                "train_runtime_min": round(metrics["train"]["train_runtime"] / 60, 1),
                "peak_rss_mb": metrics["run"]["peak_memory_mb"],
            },
        )
    ]


def rt_lora() -> Result:
    """rt-minilm-lora vs rt-minilm: test accuracy and wall time, one run each, same seed."""
    runs = {}
    for recipe in ("rt-minilm-lora", "rt-minilm"):
        out = sft_dir() / recipe
        bgcli(["finetune", "--recipe", recipe, "--output", str(out), "--overwrite", "--quiet"])
        runs[recipe] = json.loads((out / "metrics.json").read_text())
    lora, full = runs["rt-minilm-lora"], runs["rt-minilm"]
    return Result(
        name="rt-minilm-lora vs rt-minilm (test accuracy, RT 1,066 reviews)",
        ours=round(100 * lora["test"]["test_accuracy"], 2),
        baseline=round(100 * full["test"]["test_accuracy"], 2),
        unit="% accuracy",
        ratio=round(lora["test"]["test_accuracy"] / full["test"]["test_accuracy"], 3),
        identical=None,
        baseline_name="rt-minilm: full fine-tuning, same data and seed",
        details={
            "wall_s_lora": lora["run"]["wall_time_s"],
            "wall_s_full": full["run"]["wall_time_s"],
            "trainable_share_lora": lora["run"]["trainable_share"],
            "peak_rss_mb_lora": lora["run"]["peak_memory_mb"],
            "peak_rss_mb_full": full["run"]["peak_memory_mb"],
        },
    )


def run() -> list[Result]:
    return [reference(), *memory()]
