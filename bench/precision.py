"""Reduced precision on trained models: speed against our fp32 and how many answers stay the same.

- classify: the `rt-minilm` recipe's classifier (trained once here and cached) on the 1,066
  Rotten Tomatoes test reviews: bf16, torch int8, ONNX Runtime fp32 and int8 (`bgcli export`,
  plain and with `--optimize`'s fused graph) against our fp32 (label agreement), and each against
  `pipeline()` at its default batch size.
- fill-mask: the `movies-minilm-mlm` recipe's model (trained once, cached; ~17 minutes) on the
  same reviews with one word masked: top-1 and top-5 agreement with fp32.
`BENCH_PRECISION=classify` limits it to the classifier.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .assets import bench_dir, mask_one_word, rt_sentences
from .inference import REPEATS, alternate, row

BATCH = 32


def trained(recipe: str) -> Path:
    """The recipe's run dir, trained once into the bench folder."""
    out = bench_dir() / recipe
    if not (out / "metrics.json").is_file():
        command = [sys.executable, "-m", "bertgpt_cli", "finetune", "--recipe", recipe, "-o", str(out)]
        subprocess.run([*command, "--overwrite", "--quiet"], check=True, stdout=subprocess.DEVNULL)
    return out


def exported(model: Path, quantize: str, fused: bool = False) -> Path:
    out = bench_dir() / f"{model.name}-onnx-{quantize}{'-fused' if fused else ''}"
    if not (out / "bgcli_export.json").is_file():
        command = [sys.executable, "-m", "bertgpt_cli", "export", "-m", str(model), "-o", str(out)]
        command += ["--quantize", quantize, "--overwrite", "--quiet"]
        command += ["--optimize"] if fused else []
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return out


def classify_rows() -> list:
    from transformers import pipeline

    from bertgpt_cli.inference.classify import ClassifyConfig, load, processor
    from bertgpt_cli.io.records import InputRecord

    model = trained("rt-minilm")
    texts = rt_sentences()
    records = [InputRecord(i, t) for i, t in enumerate(texts)]
    variants = {
        "fp32": (model, "fp32"),
        "bf16": (model, "bf16"),
        "int8": (model, "int8"),
        "onnx fp32": (exported(model, "none"), "auto"),
        "onnx int8": (exported(model, "int8"), "auto"),
        "onnx fp32 fused": (exported(model, "none", fused=True), "auto"),
        "onnx int8 fused": (exported(model, "int8", fused=True), "auto"),
    }
    runs = {}
    for name, (folder, precision) in variants.items():
        config = ClassifyConfig(model=str(folder), precision=precision, batch_size=BATCH)
        classify = processor(load(config), config)
        runs[name] = lambda classify=classify: [r[0]["label"] for r in classify(records)]
    pipe = pipeline("text-classification", model=str(model), device="cpu")
    runs["pipeline"] = lambda: [r["label"] for r in pipe(texts)]
    measured = alternate(runs, len(texts), REPEATS)
    fp32_rate, fp32_labels = measured["fp32"]
    pipe_rate = measured["pipeline"][0]
    rows = []
    for name in variants:
        rate, labels = measured[name]
        agreement = sum(a == b for a, b in zip(labels, fp32_labels, strict=True)) / len(texts)
        rows.append(
            row(
                f"classify {name} vs fp32, trained rt-minilm",
                rate,
                fp32_rate,
                "sent/s",
                agreement == 1.0,
                "bgcli classify fp32",
                label_agreement=round(agreement, 4),
                vs_pipeline_default=round(rate / pipe_rate, 2),
            )
        )
    return rows


def fill_mask_rows() -> list:
    from bertgpt_cli.inference.fill_mask import FillMaskConfig, load, processor
    from bertgpt_cli.io.records import InputRecord

    model = trained("movies-minilm-mlm")
    sentences = [mask_one_word(s) for s in rt_sentences()]
    records = [InputRecord(i, s) for i, s in enumerate(sentences)]
    variants = {"fp32": (model, "fp32"), "bf16": (model, "bf16"), "int8": (model, "int8")}
    variants["onnx int8"] = (exported(model, "int8"), "auto")
    runs = {}
    for name, (folder, precision) in variants.items():
        config = FillMaskConfig(model=str(folder), precision=precision, batch_size=BATCH, top_k=5)
        predict = processor(load(config), config)
        runs[name] = lambda predict=predict: [
            [p["token_str"] for p in r[0]["predictions"]] for r in predict(records)
        ]
    measured = alternate(runs, len(records), REPEATS)
    fp32_rate, fp32_top = measured["fp32"]
    rows = []
    for name in variants:
        rate, top = measured[name]
        top1 = sum(a[0] == b[0] for a, b in zip(top, fp32_top, strict=True)) / len(top)
        top5 = sum(set(a) == set(b) for a, b in zip(top, fp32_top, strict=True)) / len(top)
        rows.append(
            row(
                f"fill-mask {name} vs fp32, trained movies-minilm-mlm",
                rate,
                fp32_rate,
                "sent/s",
                top1 == 1.0 and top5 == 1.0,
                "bgcli fill-mask fp32",
                top1_agreement=round(top1, 4),
                top5_same_set=round(top5, 4),
            )
        )
    return rows


def run() -> list:
    chosen = os.environ.get("BENCH_PRECISION", "classify,fill-mask").split(",")
    rows = classify_rows() if "classify" in chosen else []
    if "fill-mask" in chosen:
        rows += fill_mask_rows()
    return rows
