"""QA: `finetune --task qa` and `bgcli qa` against what a transformers 5 user writes today.

- training: minilm on the first BENCH_QA_TRAIN (default 2,000) SQuAD training questions, 1
  epoch, windows of 384 tokens with stride 128 on both sides; bgcli with the squad-minilm
  settings (batch 32, lr 2e-4, warmup 0.1) against a plain Trainer script with run_qa.py's
  defaults (windows padded to 384, batch 8, lr 5e-5, fp32). Throughput = train windows/s;
  quality = both final models scored the same way (bgcli's run_qa decoding, squad F1) on the
  first BENCH_QA_QUESTIONS dev questions.
- inference: `bgcli qa`'s Reader against a loop calling the model per question (the
  question-answering pipeline is gone), same windows and run_qa decoding. Same model
  (minilm with a seeded fresh span head: speed does not depend on the head's training), the
  first BENCH_QA_QUESTIONS (default 1,000) dev questions; answers compared span by span.
  BENCH_QA_MODEL=DIR uses a trained model instead (the bf16 / int8 rows then say how often
  their answer is the fp32 answer; a fresh head's near-tied logits are the worst case).

    python -m bench qa      (BENCH_QA=training,inference picks the rows)
"""

from __future__ import annotations

import os
from pathlib import Path

from .assets import bench_dir
from .inference import REPEATS, alternate, row
from .runner import Result

QUESTIONS = int(os.environ.get("BENCH_QA_QUESTIONS", "1000"))
TRAIN = int(os.environ.get("BENCH_QA_TRAIN", "2000"))
WINDOW, STRIDE = 384, 128


def minilm_with_span_head() -> Path:
    target = bench_dir() / "minilm-qa"
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from bertgpt_cli.io.assets import BUILTIN_MODELS
    from bertgpt_cli.io.atomic import save_dir_atomically

    source = BUILTIN_MODELS["minilm"].model_dir()
    torch.manual_seed(0)
    model = AutoModelForQuestionAnswering.from_pretrained(source)
    tokenizer = AutoTokenizer.from_pretrained(source)

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    save_dir_atomically(target, write)
    return target


def per_question_loop(model, tokenizer, questions: list[str], contexts: list[str]) -> list[tuple[int, int]]:
    import torch

    from bertgpt_cli.inference.qa_decoding import best_answers, make_windows

    spans = []
    for question, context in zip(questions, contexts, strict=True):
        windows = make_windows(tokenizer, [question], [context], WINDOW, STRIDE)
        padded = tokenizer.pad(dict(windows.encoded), return_tensors="pt")
        with torch.inference_mode():
            out = model(**padded)
        per_window = []
        for w, offsets in enumerate(windows.context_offsets):
            length = len(offsets)
            per_window.append(
                (out.start_logits[w, :length].numpy(), out.end_logits[w, :length].numpy(), offsets)
            )
        answers, _ = best_answers(context, per_window)
        spans.append((answers[0].start, answers[0].end) if answers else (None, None))
    return spans


def train_file() -> Path:
    import json

    path = bench_dir() / f"squad-train-{TRAIN}.jsonl"
    if not path.is_file():
        from bertgpt_cli.io.data import load_data

        rows = load_data("squad@train").select(range(TRAIN))
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def dev_f1(model_dir: Path) -> float:
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from bertgpt_cli.inference.qa import QaConfig, Reader
    from bertgpt_cli.io.data import load_data
    from bertgpt_cli.io.records import InputRecord
    from bertgpt_cli.training.metrics import load_metric

    dev = load_data("squad@validation").select(range(QUESTIONS))
    records = [InputRecord(i, r["question"], {"context": r["context"]}) for i, r in enumerate(dev)]
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir).eval()
    reader = Reader(model, AutoTokenizer.from_pretrained(model_dir), QaConfig(model=str(model_dir)), None)
    answers = [r[0]["answer"] for r in reader.answer(records)]
    predictions = [{"id": r["id"], "prediction_text": a} for r, a in zip(dev, answers, strict=True)]
    references = [{"id": r["id"], "answers": r["answers"]} for r in dev]
    return load_metric("squad").compute(predictions=predictions, references=references)["f1"]


def train_ours(out: Path, batch_size: int, lr: float, warmup: float) -> dict:
    import json
    import subprocess
    import sys

    command = [sys.executable, "-m", "bertgpt_cli", "finetune", "--task", "qa", "-m", "minilm"]
    command += [
        "--train-data",
        str(train_file()),
        "--eval-split",
        "0",
        "--epochs",
        "1",
        "--max-length",
        str(WINDOW),
    ]
    command += [
        "--doc-stride",
        str(STRIDE),
        "--batch-size",
        str(batch_size),
        "--lr",
        str(lr),
        "--warmup",
        str(warmup),
    ]
    command += ["--output", str(out), "--overwrite", "--quiet", "--format", "jsonl"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "metrics.json").read_text())["train"]


def training_row() -> list[Result]:
    import json
    import subprocess
    import sys

    from bertgpt_cli.io.assets import BUILTIN_MODELS

    train = train_file()
    ours_dir, plain_dir = bench_dir() / "train-qa-ours", bench_dir() / "train-qa-plain"
    same_dir = bench_dir() / "train-qa-ours-run-qa-settings"
    ours = train_ours(ours_dir, 32, 2e-4, 0.1)  # the squad-minilm recipe's settings
    same = train_ours(same_dir, 8, 5e-5, 0.0)  # run_qa's: the same updates, only the engine differs
    script = Path(__file__).with_name("plain_trainer.py")
    command = [
        sys.executable,
        str(script),
        "--task",
        "qa",
        "--model",
        str(BUILTIN_MODELS["minilm"].model_dir()),
    ]
    command += ["--data", str(train), "--out", str(plain_dir), "--steps", "0", "--epochs", "1"]
    command += ["--max-length", str(WINDOW), "--doc-stride", str(STRIDE)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    plain = json.loads(done.stdout.strip().splitlines()[-1])
    ours_rate, plain_rate = ours["train_samples_per_second"], plain["train_samples_per_second"]
    plain_f1 = round(dev_f1(plain_dir), 2)
    same_row = Result(
        name="finetune qa (run_qa settings) vs run_qa defaults",
        ours=same["train_samples_per_second"],
        baseline=plain_rate,
        unit="windows/s",
        ratio=round(same["train_samples_per_second"] / plain_rate, 2),
        identical=None,
        baseline_name="plain Trainer script, run_qa defaults (padded 384, batch 8, lr 5e-5, fp32)",
        details={
            "train_questions": TRAIN,
            "dev_f1_ours": round(dev_f1(same_dir), 2),
            "dev_f1_baseline": plain_f1,
        },
    )
    recipe_row = Result(
        name="finetune qa (squad-minilm settings) vs run_qa defaults",
        ours=ours_rate,
        baseline=plain_rate,
        unit="windows/s",
        ratio=round(ours_rate / plain_rate, 2),
        identical=None,
        baseline_name="plain Trainer script, run_qa defaults (padded 384, batch 8, lr 5e-5, fp32)",
        details={
            "train_questions": TRAIN,
            "dev_f1_ours": round(dev_f1(ours_dir), 2),
            "dev_f1_baseline": plain_f1,
        },
    )
    return [recipe_row, same_row]


def run() -> list[Result]:
    chosen = os.environ.get("BENCH_QA", "training,inference").split(",")
    rows = training_row() if "training" in chosen else []
    return rows + (inference_rows() if "inference" in chosen else [])


def inference_rows() -> list[Result]:
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from bertgpt_cli.inference.qa import QaConfig, Reader
    from bertgpt_cli.io.data import load_data
    from bertgpt_cli.io.records import InputRecord

    dev = load_data("squad@validation").select(range(QUESTIONS))
    questions, contexts = dev["question"], dev["context"]
    records = [
        InputRecord(i, q, {"context": c}) for i, (q, c) in enumerate(zip(questions, contexts, strict=True))
    ]
    # BENCH_QA_MODEL: a trained model (e.g. a squad-minilm run) makes the bf16 / int8
    # agreement meaningful; a fresh head's near-tied logits are the worst case.
    model_dir = Path(os.environ.get("BENCH_QA_MODEL") or minilm_with_span_head())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir).eval()
    reader = Reader(model, tokenizer, QaConfig(model=str(model_dir), batch_size=32, doc_stride=STRIDE), None)

    def ours():
        return [(r[0]["start"], r[0]["end"]) for r in reader.answer(records)]

    measured = alternate(
        {"ours": ours, "loop": lambda: per_question_loop(model, tokenizer, questions, contexts)},
        len(questions),
        REPEATS,
    )
    (ours_rate, ours_out), (loop_rate, loop_out) = measured["ours"], measured["loop"]
    rows = []
    for precision in ("bf16", "int8"):
        config = QaConfig(model=str(model_dir), batch_size=32, doc_stride=STRIDE, precision=precision)
        from bertgpt_cli.inference.loading import load_for_inference

        fast_model, fast_tokenizer = load_for_inference(config, config, AutoModelForQuestionAnswering, "qa")
        fast = Reader(fast_model, fast_tokenizer, config, None)
        rate, spans = alternate(
            {"fast": lambda fast=fast: [(r[0]["start"], r[0]["end"]) for r in fast.answer(records)]},
            len(questions),
            REPEATS,
        )["fast"]
        same = sum(a == b for a, b in zip(spans, ours_out, strict=True)) / len(spans)
        rows.append(
            row(
                f"qa {precision} vs per-question loop",
                rate,
                loop_rate,
                "q/s",
                same == 1.0,
                "the same loop (fp32)",
                items=len(questions),
                agreement_with_fp32=round(same, 4),
            )
        )
    return rows + [
        row(
            "qa fp32 vs per-question loop",
            ours_rate,
            loop_rate,
            "q/s",
            ours_out == loop_out,
            "a model call per question, same windows (384/128) and run_qa decoding",
            items=len(questions),
        )
    ]
