"""`python -m bench [NAME...]`: run benchmarks, print the table, update bench/results.json.

`python -m bench --markdown` prints bench/results.json as the README's table.
"""

from __future__ import annotations

import argparse
import importlib
import json

from .runner import RESULTS, print_table, save

BENCHMARKS = ["startup", "inference", "training", "ner", "qa", "embed", "serve", "tokenizer"]
# Run by name only: pretrain_curve takes over an hour; precision trains two recipes once (~21 min);
# training_memory runs two recipes for 600 steps, with and without rounded batch lengths (~50 min).
# sft: bgcli vs TRL + LoRA vs full memory (~12 min); sft_quality: a 30-minute recipe + 2 x 500 answers.
# embedding_speed: bgcli vs SentenceTransformerTrainer (~12 min); embedding_quality: a recipe (~25 min).
# sweep: bgcli sweep vs Trainer.hyperparameter_search, BGCLI_SWEEP_MINUTES each (60) + 6 test runs (~25 min).
LONG_BENCHMARKS = [
    "pretrain_curve",
    "precision",
    "training_memory",
    "sft",
    "sft_quality",
    "embedding_speed",
    "embedding_quality",
    "sweep",
]


def machine_text(details: dict) -> str:
    """`Intel Xeon ..., 2 threads, amx_bf16`; empty for rows measured before machines were kept."""
    m = details.get("machine")
    if not m:
        return ""
    units = f", {'/'.join(m['bf16_units'])}" if m.get("bf16_units") else ""
    return f"{m['cpu']}, {m['threads']} threads{units}"


def markdown() -> str:
    """Two tables: inference/start-up rows, then training rows (quality and MFU columns)."""
    results = json.loads(RESULTS.read_text())
    training = [r for r in results if "mfu_ours" in r.get("details", {})]
    lines = [
        "| benchmark | bgcli | baseline | unit | ratio | identical | agree | RSS MB | baseline is "
        "| measured on |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r in training:
            continue
        details = r.get("details", {})
        agree = next((v for k, v in details.items() if "agreement" in k or "fraction" in k), "")
        rss = details.get("ours_peak_rss_mb")
        rss_text = f"{rss} / {details['baseline_peak_rss_mb']}" if rss else ""
        same = "" if r["identical"] is None else ("yes" if r["identical"] else "no")
        lines.append(
            f"| {r['name']} | {r['ours']} | {r['baseline']} | {r['unit']} | {r['ratio']}x | {same} "
            f"| {agree} | {rss_text} | {r['baseline_name']} | {machine_text(details)} |"
        )
    if training:
        lines += [
            "",
            "| training | bgcli | baseline | unit | ratio | quality bgcli / baseline | MFU bgcli / baseline "
            "| baseline is |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in training:
            d = r["details"]
            quality = next(k.removesuffix("_ours") for k in d if k.endswith("_ours") and "mfu" not in k)
            quality = f"{quality} {d[quality + '_ours']} / {d[quality + '_baseline']}"
            lines.append(
                f"| {r['name']} | {r['ours']} | {r['baseline']} | {r['unit']} | {r['ratio']}x | {quality} "
                f"| {d['mfu_ours']:.0%} / {d['mfu_baseline']:.0%} | {r['baseline_name']} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names",
        nargs="*",
        help=f"benchmarks to run: {', '.join(BENCHMARKS)} (default: all), or by name only: "
        + ", ".join(LONG_BENCHMARKS),
    )
    parser.add_argument("--markdown", action="store_true", help="print results.json as a Markdown table")
    args = parser.parse_args()
    if args.markdown:
        print(markdown())
        return
    unknown = set(args.names) - set(BENCHMARKS) - set(LONG_BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    results = []
    for name in args.names or BENCHMARKS:
        rows = importlib.import_module(f"bench.{name}").run()
        save(rows)  # after each benchmark: a later one that fails keeps the earlier rows
        results.extend(rows)
    print_table(results)


if __name__ == "__main__":
    main()
