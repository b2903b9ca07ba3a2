"""NER: `bgcli finetune --task ner` and `bgcli ner` against transformers, in one run.

- training: minilm on CoNLL-2003 train (BENCH_NER_TRAIN sentences, default all 14,041),
  BENCH_NER_EPOCHS epochs (default 1), against a plain Trainer script with the run_ner.py
  defaults (batch 8, lr 5e-5, fp32, random order); ours runs the conll2003-minilm recipe's
  settings. Quality = test entity F1 (seqeval) of each final model; throughput = the
  Trainer's train samples/s.
- inference: the 3,453 test sentences (words joined by spaces) through `bgcli ner`'s
  Recognizer against `pipeline("token-classification", aggregation_strategy="simple")` at
  its default batch size, with the model the training row made (every entity compared:
  type, offsets, word, score to 1e-4).

    python -m bench ner
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .assets import bench_dir
from .inference import REPEATS, alternate, row
from .runner import Result
from .training import flops_per_token, matmul_peak_gflops

TRAIN = int(os.environ.get("BENCH_NER_TRAIN", "14041"))
EPOCHS = float(os.environ.get("BENCH_NER_EPOCHS", "1"))
RECIPE = {"batch": 32, "lr": 2e-4, "warmup": 0.1}  # recipes/conll2003-minilm.yaml


def split_file(split: str, limit: int | None = None) -> Path:
    """A CoNLL-2003 split as JSONL tokens/ner_tags (what the plain script reads)."""
    path = bench_dir() / f"conll2003-{split}-{limit or 'all'}.jsonl"
    if not path.is_file():
        from bertgpt_cli.io.data import load_data

        rows = load_data(f"conll2003@{split}")
        rows = rows.select(range(min(limit, len(rows)))) if limit else rows
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def train_ours(train: Path, test: Path, out: Path) -> dict:
    command = [sys.executable, "-m", "bertgpt_cli", "finetune", "--task", "ner", "-m", "minilm"]
    command += ["--train-data", str(train), "--test-data", str(test), "--eval-split", "0"]
    command += ["--epochs", str(EPOCHS), "--batch-size", str(RECIPE["batch"]), "--lr", str(RECIPE["lr"])]
    command += ["--warmup", str(RECIPE["warmup"])]
    command += ["--output", str(out), "--overwrite", "--quiet", "--format", "jsonl"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "metrics.json").read_text())


def train_plain(model_dir: Path, train: Path, test: Path, out: Path) -> dict:
    script = Path(__file__).with_name("plain_trainer.py")
    command = [sys.executable, str(script), "--task", "ner", "--model", str(model_dir), "--data", str(train)]
    command += ["--test", str(test), "--out", str(out), "--steps", "0", "--epochs", str(EPOCHS)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def mean_tokens(model_dir: Path, train: Path) -> float:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    sentences = [json.loads(line)["tokens"] for line in train.read_text().splitlines()]
    lengths = [len(ids) for ids in tokenizer(sentences, is_split_into_words=True)["input_ids"]]
    return sum(lengths) / len(lengths)


def training_row(model_dir: Path, ours_dir: Path) -> Result:
    train, test = split_file("train", TRAIN), split_file("test")
    ours = train_ours(train, test, ours_dir)
    plain = train_plain(model_dir, train, test, bench_dir() / "train-ner-plain")
    peak = matmul_peak_gflops()
    token_flops = flops_per_token("classification", model_dir) * mean_tokens(model_dir, train)
    ours_rate = ours["train"]["train_samples_per_second"]
    plain_rate = plain["train_samples_per_second"]
    return Result(
        name="finetune ner vs run_ner defaults",
        ours=ours_rate,
        baseline=plain_rate,
        unit="samples/s",
        ratio=round(ours_rate / plain_rate, 2),
        identical=None,
        baseline_name="plain Trainer script, run_ner defaults (batch 8, lr 5e-5, fp32)",
        details={
            "train_sentences": TRAIN,
            "epochs": EPOCHS,
            "test_f1_ours": round(ours["test"]["test_f1"], 4),
            "test_f1_baseline": round(plain["test_f1"], 4),
            "mfu_ours": round(ours_rate * token_flops / (peak * 1e9), 3),
            "mfu_baseline": round(plain_rate * token_flops / (peak * 1e9), 3),
            "bf16_matmul_peak_gflops": round(peak, 1),
        },
    )


def same_entities(ours: list[list[dict]], reference: list[list[dict]]) -> bool:
    def key(entity: dict) -> tuple:
        return entity["entity_group"], entity["start"], entity["end"], entity["word"]

    for a_list, b_list in zip(ours, reference, strict=True):
        if [key(a) for a in a_list] != [key(b) for b in b_list]:
            return False
        if any(abs(a["score"] - float(b["score"])) > 1e-4 for a, b in zip(a_list, b_list, strict=True)):
            return False
    return True


def inference_row(model_dir: Path) -> Result:
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

    from bertgpt_cli.inference.ner import NerConfig, Recognizer
    from bertgpt_cli.io.data import load_data
    from bertgpt_cli.io.records import InputRecord

    texts = [" ".join(tokens) for tokens in load_data("conll2003@test")["tokens"]]
    records = [InputRecord(i, t) for i, t in enumerate(texts)]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForTokenClassification.from_pretrained(model_dir).eval()
    ours = Recognizer(model, tokenizer, NerConfig(model=str(model_dir), batch_size=32))
    pipe = pipeline("token-classification", model=model, tokenizer=tokenizer, aggregation_strategy="simple")
    measured = alternate(
        {
            "ours": lambda: [r[0]["entities"] for r in ours.recognize(records)],
            "pipeline": lambda: pipe(texts),
        },
        len(texts),
        REPEATS,
    )
    (ours_rate, ours_out), (pipe_rate, pipe_out) = measured["ours"], measured["pipeline"]
    return row(
        "ner fp32 vs pipeline default",
        ours_rate,
        pipe_rate,
        "sent/s",
        same_entities(ours_out, pipe_out),
        "pipeline('token-classification', aggregation_strategy='simple') batch_size=1",
        items=len(texts),
        entities=sum(len(e) for e in ours_out),
    )


def run() -> list[Result]:
    """BENCH_NER=training,inference (the default: both)."""
    from bertgpt_cli.io.assets import BUILTIN_MODELS

    chosen = os.environ.get("BENCH_NER", "training,inference").split(",")
    ours_dir = bench_dir() / "train-ner-ours"
    rows = []
    if "training" in chosen or not (ours_dir / "metrics.json").is_file():
        rows.append(training_row(BUILTIN_MODELS["minilm"].model_dir(), ours_dir))
    if "inference" in chosen:
        rows.append(inference_row(ours_dir))
    return rows
