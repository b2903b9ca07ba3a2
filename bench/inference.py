"""fill-mask, classify and generate: ours vs transformers on the same model and inputs.

Rows per task: in-process throughput against `pipeline()` at its default batch size and at
a tuned batch size (and, for generate, a hand-written left-padded `model.generate`); bf16
against fp32 with the agreement of the answers; whole-process wall time and peak RSS of
the CLI against a plain pipeline script (start-up and model load included).
"""

from __future__ import annotations

import os  # noqa: F401
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .assets import mask_one_word, minilm_with_head, rt_sentences
from .runner import Result, alternate_runs

REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
GEN_PROMPTS, GEN_TOKENS = 16, 64


def alternate(runs: dict, items: int, repeats: int) -> dict:
    """Items per second (median over rounds) and the last output of each contender."""
    measured = alternate_runs(runs, repeats)
    return {name: (items / statistics.median(times), output) for name, (times, output) in measured.items()}


def median_rate(fn, items: int, repeats: int = REPEATS) -> tuple[float, object]:
    return alternate({"run": fn}, items, repeats)["run"]


def row(name, ours, base, unit, identical, baseline_name, **details) -> Result:
    return Result(
        name=name,
        ours=round(ours, 1),
        baseline=round(base, 1),
        unit=unit,
        ratio=round(ours / base, 2),
        identical=identical,
        baseline_name=baseline_name,
        details=details,
    )


def run_process(command: list[str], stdin_text: str) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and stdout of one child process.

    RSS comes from GNU time run as the parent: a child forked straight from this (large)
    process would report our own RSS, as Linux keeps ru_maxrss across exec.
    """
    with tempfile.TemporaryFile() as out, tempfile.NamedTemporaryFile("r") as rss:
        start = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", rss.name, *command],
            input=stdin_text.encode(),
            stdout=out,
            stderr=subprocess.DEVNULL,
        )
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"benchmark process failed ({proc.returncode}): {' '.join(command[:3])}")
        out.seek(0)
        return wall, int(rss.read().split()[-1]) / 1024, out.read().decode()


def whole_process(name, bgcli_args, baseline_code, texts, unit_items) -> Result:
    bgcli = [str(Path(sys.executable).parent / "bgcli"), *bgcli_args, "--quiet", "-f", "jsonl"]
    baseline = [sys.executable, "-c", baseline_code]
    stdin = "\n".join(texts) + "\n"
    ours, base = [], []
    for _ in range(REPEATS):
        ours.append(run_process(bgcli, stdin))
        base.append(run_process(baseline, stdin))
    ours_wall = statistics.median(w for w, _, _ in ours)
    base_wall = statistics.median(w for w, _, _ in base)
    return Result(
        name=name,
        ours=round(ours_wall, 2),
        baseline=round(base_wall, 2),
        unit="s",
        ratio=round(base_wall / ours_wall, 2),
        identical=None,
        baseline_name="python script with pipeline(batch_size=32)",
        details={
            "items": unit_items,
            "ours_peak_rss_mb": round(max(r for _, r, _ in ours)),
            "baseline_peak_rss_mb": round(max(r for _, r, _ in base)),
        },
    )


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# fill-mask ------------------------------------------------------------------------------


def bench_fill_mask() -> list[Result]:
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

    from bertgpt_cli.inference.fill_mask import MaskPredictor
    from bertgpt_cli.io.records import InputRecord

    model_dir = str(minilm_with_head("mlm"))
    texts = [mask_one_word(s) for s in rt_sentences()]
    records = [InputRecord(i, t) for i, t in enumerate(texts)]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForMaskedLM.from_pretrained(model_dir).eval()
    ours = MaskPredictor(model, tokenizer, 5, None)
    pipe = pipeline("fill-mask", model=model, tokenizer=tokenizer)

    def top_tokens(results):
        return [[p["token"] for p in r[0]["predictions"]] for r in results]

    def pipe_tokens(results):
        return [[p["token"] for p in r] for r in results]

    n = len(texts)
    measured = alternate(
        {
            "ours": lambda: top_tokens(ours.predict(records, 32)),
            "pipe32": lambda: pipe_tokens(pipe(texts, batch_size=32)),
            "pipe_default": lambda: pipe_tokens(pipe(texts)),
        },
        n,
        REPEATS,
    )
    default_rate, default_out = measured["pipe_default"]
    ours_rate, ours_out = measured["ours"]
    rows = [
        row(
            "fill-mask fp32 vs pipeline default",
            ours_rate,
            default_rate,
            "sent/s",
            ours_out == default_out,
            "pipeline('fill-mask') batch_size=1",
            items=n,
        ),
        row(
            "fill-mask fp32 vs pipeline bs=32",
            ours_rate,
            measured["pipe32"][0],
            "sent/s",
            ours_out == measured["pipe32"][1],
            "pipeline('fill-mask', batch_size=32)",
            items=n,
        ),
    ]
    model_bf16 = AutoModelForMaskedLM.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
    ours_bf16 = MaskPredictor(model_bf16, tokenizer, 5, None)
    bf16_rate, bf16_out = median_rate(lambda: top_tokens(ours_bf16.predict(records, 32)), n)
    agreement = sum(a[0] == b[0] for a, b in zip(bf16_out, ours_out, strict=True)) / n
    rows.append(
        row(
            "fill-mask bf16 vs fp32 (ours)",
            bf16_rate,
            ours_rate,
            "sent/s",
            agreement == 1.0,
            "bgcli fill-mask fp32",
            top1_agreement=round(agreement, 4),
            items=n,
        )
    )
    code = (
        "import sys\nfrom transformers import pipeline\n"
        f"p = pipeline('fill-mask', model={model_dir!r})\n"
        "texts = sys.stdin.read().split('\\n')[:-1]\n"
        "import json\nfor r in p(texts, batch_size=32): print(json.dumps(r))\n"
    )
    rows.append(whole_process("fill-mask whole process", ["fill-mask", "-m", model_dir], code, texts, n))
    rows[0].details["in_process_peak_rss_mb"] = round(peak_rss_mb())
    return rows


# classify -------------------------------------------------------------------------------


def bench_classify() -> list[Result]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from bertgpt_cli.inference.classify import Classifier, ClassifyConfig
    from bertgpt_cli.io.records import InputRecord

    model_dir = str(minilm_with_head("cls"))
    texts = rt_sentences()
    records = [InputRecord(i, t) for i, t in enumerate(texts)]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    config = ClassifyConfig(model=model_dir, batch_size=32)
    ours = Classifier(model, tokenizer, config)
    pipe = pipeline("text-classification", model=model, tokenizer=tokenizer)

    def labels(results):
        return [r[0]["label"] for r in results]

    n = len(texts)
    measured = alternate(
        {
            "ours": lambda: labels(ours.classify(records)),
            "pipe32": lambda: [r["label"] for r in pipe(texts, batch_size=32)],
            "pipe_default": lambda: [r["label"] for r in pipe(texts)],
        },
        n,
        REPEATS,
    )
    default_rate, default_out = measured["pipe_default"]
    ours_rate, ours_out = measured["ours"]
    rows = [
        row(
            "classify fp32 vs pipeline default",
            ours_rate,
            default_rate,
            "sent/s",
            ours_out == default_out,
            "pipeline('text-classification') batch_size=1",
            items=n,
        ),
        row(
            "classify fp32 vs pipeline bs=32",
            ours_rate,
            measured["pipe32"][0],
            "sent/s",
            ours_out == measured["pipe32"][1],
            "pipeline('text-classification', batch_size=32)",
            items=n,
        ),
    ]
    model_bf16 = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
    ours_bf16 = Classifier(model_bf16, tokenizer, config)
    bf16_rate, bf16_out = median_rate(lambda: labels(ours_bf16.classify(records)), n)
    agreement = sum(a == b for a, b in zip(bf16_out, ours_out, strict=True)) / n
    rows.append(
        row(
            "classify bf16 vs fp32 (ours)",
            bf16_rate,
            ours_rate,
            "sent/s",
            agreement == 1.0,
            "bgcli classify fp32",
            label_agreement=round(agreement, 4),
            items=n,
        )
    )
    code = (
        "import sys, json\nfrom transformers import pipeline\n"
        f"p = pipeline('text-classification', model={model_dir!r})\n"
        "for r in p(sys.stdin.read().split('\\n')[:-1], batch_size=32): print(json.dumps(r))\n"
    )
    rows.append(whole_process("classify whole process", ["classify", "-m", model_dir], code, texts, n))
    return rows


# generate -------------------------------------------------------------------------------


def bench_generate() -> list[Result]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    from bertgpt_cli.inference.generate import GenerateConfig, Generator
    from bertgpt_cli.io.assets import BUILTIN_MODELS
    from bertgpt_cli.io.records import InputRecord

    model_dir = str(BUILTIN_MODELS["smollm2"].model_dir())
    prompts = [" ".join(s.split()[:8]) for s in rt_sentences(GEN_PROMPTS)]
    records = [InputRecord(i, p) for i, p in enumerate(prompts)]
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    config = GenerateConfig(model=model_dir, max_new_tokens=GEN_TOKENS, batch_size=GEN_PROMPTS)
    # ours gets its own copy: Generator switches its model's linears to SkinnyLinear
    ours = Generator(AutoModelForCausalLM.from_pretrained(model_dir).eval(), tokenizer, config)
    tokens = GEN_PROMPTS * GEN_TOKENS  # the unit: requested new tokens

    def hand_written():
        batch = tokenizer(prompts, return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = model.generate(
                **batch, max_new_tokens=GEN_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        width = batch["input_ids"].shape[1]
        return [tokenizer.decode(o[width:], skip_special_tokens=True) for o in out]

    pipe = pipeline("text-generation", model=model, tokenizer=tokenizer)
    kwargs = {"max_new_tokens": GEN_TOKENS, "do_sample": False, "return_full_text": False}

    def pipe_texts(batch_size=None):
        extra = {"batch_size": batch_size} if batch_size else {}
        return [r[0]["generated_text"] for r in pipe(prompts, **kwargs, **extra)]

    def ours_texts(generator=ours):
        return [r[0]["completion"] for r in generator.generate(records)]

    measured = alternate({"ours": ours_texts, "hand": hand_written}, tokens, REPEATS)
    bs8_rate, bs8_out = median_rate(lambda: pipe_texts(8), tokens, repeats=1)
    default_rate, default_out = median_rate(pipe_texts, tokens, repeats=1)
    ours_rate, ours_out = measured["ours"]
    rows = [
        row(
            "generate fp32 vs pipeline default",
            ours_rate,
            default_rate,
            "tok/s",
            ours_out == default_out,
            "pipeline('text-generation') batch_size=1",
            prompts=GEN_PROMPTS,
            new_tokens=GEN_TOKENS,
        ),
        row(
            "generate fp32 vs pipeline bs=8",
            ours_rate,
            bs8_rate,
            "tok/s",
            ours_out == bs8_out,
            "pipeline('text-generation', batch_size=8)",
        ),
        row(
            "generate fp32 vs batched generate",
            ours_rate,
            measured["hand"][0],
            "tok/s",
            [o.strip() for o in ours_out] == [h.strip() for h in measured["hand"][1]],
            "hand-written left-padded model.generate, all 16 at once",
        ),
    ]
    model_bf16 = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
    ours_bf16 = Generator(model_bf16, tokenizer, config)
    bf16_rate, bf16_out = median_rate(lambda: ours_texts(ours_bf16), tokens)
    agreement = sum(a == b for a, b in zip(bf16_out, ours_out, strict=True)) / len(prompts)
    rows.append(
        row(
            "generate bf16 vs fp32 (ours)",
            bf16_rate,
            ours_rate,
            "tok/s",
            agreement == 1.0,
            "bgcli generate fp32",
            identical_text_fraction=round(agreement, 4),
        )
    )
    code = (
        "import sys, json\nfrom transformers import pipeline\n"
        f"p = pipeline('text-generation', model={model_dir!r})\n"
        "p.tokenizer.padding_side = 'left'\n"
        "prompts = sys.stdin.read().split('\\n')[:-1]\n"
        f"out = p(prompts, batch_size=8, max_new_tokens={GEN_TOKENS}, do_sample=False,"
        " return_full_text=False)\n"
        "for r in out: print(json.dumps(r))\n"
    )
    rows.append(
        whole_process(
            "generate whole process",
            ["generate", "-m", model_dir, "--max-new-tokens", str(GEN_TOKENS)],
            code,
            prompts,
            GEN_PROMPTS,
        )
    )
    rows[-1].baseline_name = "python script with pipeline(batch_size=8)"
    return rows


def run() -> list[Result]:
    """BENCH_INFERENCE=fill-mask,classify,generate (the default: all) picks the commands."""
    benches = {"fill-mask": bench_fill_mask, "classify": bench_classify, "generate": bench_generate}
    chosen = os.environ.get("BENCH_INFERENCE", ",".join(benches)).split(",")
    return [row for name, bench in benches.items() if name in chosen for row in bench()]
