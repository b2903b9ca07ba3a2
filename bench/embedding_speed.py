"""Embedding training (issue 30), side by side in one run:

- speed: `bgcli finetune --task embedding` vs sentence-transformers' SentenceTransformerTrainer
  with MultipleNegativesRankingLoss and its no-duplicates batch sampler: the same model
  (minilm), data (SQuAD train question -> paragraph pairs), batch, steps, learning rate, max
  length and precision (bf16 autocast where the CPU has bf16 units, else fp32); training
  pairs/s, and both models' nDCG@10 on the SQuAD dev retrieval task below.
- quality: see embedding_quality.

    python -m bench embedding_speed
    python -m bench embedding_quality
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .assets import bench_dir
from .runner import Result, bgcli, run_offline

STEPS, BATCH, MAX_LENGTH, LR = 120, 32, 256, 5e-5


def folder() -> Path:
    path = bench_dir() / "embedding"
    path.mkdir(parents=True, exist_ok=True)
    return path


def train_file() -> Path:
    """STEPS x BATCH pairs of squad-retrieval@train (seeded shuffle): the file both stacks read."""
    from bertgpt_cli.io.data import load_data

    path = folder() / f"train-{STEPS * BATCH}.jsonl"
    if not path.is_file():
        load_data("squad-retrieval@train").shuffle(seed=0).select(range(STEPS * BATCH)).to_json(path)
    return path


def dev_scores(model: str) -> dict:
    """SQuAD dev as `bgcli eval --task retrieval` scores it: every distinct question against
    the 2,067 distinct paragraphs, each embedded once, the model's own pooling."""
    from bertgpt_cli.api import evaluate

    return evaluate(model, data="squad-retrieval@validation", task="retrieval", quiet=True, offline=True)


def ours(data: Path, out: Path) -> float:
    """bgcli's training: pairs/s of the training loop (train_runtime, as the Trainer reports)."""
    args = ["finetune", "--task", "embedding", "-m", "minilm", "--train-data", str(data), "-o", str(out)]
    args += ["--max-steps", str(STEPS), "--batch-size", str(BATCH), "--max-length", str(MAX_LENGTH)]
    args += ["--lr", str(LR), "--warmup", "0.1", "--eval-split", "0", "--overwrite", "--quiet"]
    bgcli(args)
    metrics = json.loads((out / "metrics.json").read_text())
    return STEPS * BATCH / metrics["train"]["train_runtime"]


THEIRS = """
import json, sys
from datasets import load_dataset
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer import (
    SentenceTransformerTrainer, SentenceTransformerTrainingArguments,
)
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from sentence_transformers.base.sampler import BatchSamplers
from bertgpt_cli.models.devices import cpu_bf16_units
from bertgpt_cli.io.assets import BUILTIN_MODELS
data, out, steps, batch, max_length, lr = sys.argv[1:7]
model = SentenceTransformer(str(BUILTIN_MODELS["minilm"].model_dir()), device="cpu")
model.max_seq_length = int(max_length)
args = SentenceTransformerTrainingArguments(
    output_dir=out, per_device_train_batch_size=int(batch), max_steps=int(steps), learning_rate=float(lr),
    warmup_ratio=0.1, bf16=bool(cpu_bf16_units()), use_cpu=True, batch_sampler=BatchSamplers.NO_DUPLICATES,
    save_strategy="no", report_to=[], seed=42, logging_steps=1000,
)
train = load_dataset("json", data_files=data, split="train")
loss = MultipleNegativesRankingLoss(model)
trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=loss)
result = trainer.train()
model.save(out)
print(json.dumps({"train_runtime": result.metrics["train_runtime"]}))
"""


def theirs(data: Path, out: Path) -> float:
    command = [sys.executable, "-c", THEIRS, str(data), str(out), str(STEPS), str(BATCH), str(MAX_LENGTH)]
    done = run_offline(command + [str(LR)], "SentenceTransformerTrainer")
    return STEPS * BATCH / json.loads(done.stdout.strip().splitlines()[-1])["train_runtime"]


def run() -> list[Result]:
    data = train_file()
    ours_dir, theirs_dir = folder() / "ours", folder() / "theirs"
    ours_rate = ours(data, ours_dir)
    theirs_rate = theirs(data, theirs_dir)
    ours_ndcg = dev_scores(str(ours_dir))["ndcg@10"]
    theirs_ndcg = dev_scores(str(theirs_dir))["ndcg@10"]
    return [
        Result(
            name=f"finetune --task embedding vs SentenceTransformerTrainer + MNRL ({STEPS} steps x {BATCH})",
            ours=round(ours_rate, 1),
            baseline=round(theirs_rate, 1),
            unit="pairs/s",
            ratio=round(ours_rate / theirs_rate, 2),
            identical=None,
            baseline_name="SentenceTransformerTrainer, MultipleNegativesRankingLoss, NO_DUPLICATES sampler",
            details={"ours_dev_ndcg@10": ours_ndcg, "theirs_dev_ndcg@10": theirs_ndcg},
        )
    ]


def run_quality() -> list[Result]:
    trained = folder() / "squad-minilm-embedding"
    if not (trained / "metrics.json").is_file():
        bgcli(
            ["finetune", "--recipe", "squad-minilm-embedding", "-o", str(trained), "--overwrite", "--quiet"]
        )
    before, after = dev_scores("minilm"), dev_scores(str(trained))
    wall = json.loads((trained / "metrics.json").read_text())["run"]["wall_time_s"]
    return [
        Result(
            name="squad-minilm-embedding vs minilm as it is: SQuAD dev retrieval nDCG@10",
            ours=round(after["ndcg@10"] * 100, 2),
            baseline=round(before["ndcg@10"] * 100, 2),
            unit="nDCG@10 x 100",
            ratio=round(after["ndcg@10"] / before["ndcg@10"], 3),
            identical=None,
            baseline_name="minilm (all-MiniLM-L6-v2) untuned",
            details={"after": after, "before": before, "training_wall_s": wall},
        )
    ]
