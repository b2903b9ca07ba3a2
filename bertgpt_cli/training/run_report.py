"""The human side of a run dir: PNG plots and a model card README.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io.atomic import write_text_atomically


def write_report(run_dir: Path, config, task, metrics: dict[str, Any], history: list[dict]) -> None:
    plots = plot_curves(run_dir, history)
    report = metrics.get("test_report") or {}
    if "confusion_matrix" in report:  # single-label only: label sets have one 2x2 matrix per label
        names = report.get("confusion_labels") or metrics["run"]["labels"]  # NER: entity types
        plots.append(plot_confusion(run_dir, report["confusion_matrix"], names))
    write_text_atomically(run_dir / "README.md", model_card(config, task, metrics, plots))


def plot_curves(run_dir: Path, history: list[dict]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [(h["step"], h) for h in history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss")
    if evals:
        ax.plot([s for s, _ in evals], [h.get("eval_loss") for _, h in evals], "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if train or evals:  # a run shorter than one logging interval has nothing to label
        ax.legend()
    if evals:
        metric_axis = ax.twinx()
        choices = (
            "eval_f1_macro",
            "eval_f1",
            "eval_accuracy",
            "eval_top5_accuracy",
            "eval_next_token_accuracy",
        )
        key = next((k for k in choices if k in evals[0][1]), None)
        if key:
            metric_axis.plot(
                [s for s, _ in evals], [h[key] for _, h in evals], "s--", color="tab:green", label=key[5:]
            )
            metric_axis.set_ylabel(key[5:])
            metric_axis.legend(loc="center right")
    fig.tight_layout()
    fig.savefig(run_dir / "loss.png", dpi=100)
    plt.close(fig)
    return ["loss.png"]


def plot_confusion(run_dir: Path, matrix: list[list[int]], names: list[str]) -> str:
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(4, 4))
    ConfusionMatrixDisplay(np.array(matrix), display_labels=names).plot(ax=ax, colorbar=False)
    ax.set_title("test confusion matrix")
    fig.tight_layout()
    fig.savefig(run_dir / "confusion_matrix.png", dpi=100)
    plt.close(fig)
    return "confusion_matrix.png"


def model_card(config, task, metrics: dict[str, Any], plots: list[str]) -> str:
    rows = []
    splits = {"before": "eval, starting model", "eval": "eval", "test": "test"}
    for split, shown in splits.items():
        values = metrics.get(split, {})
        for name in task.card_metrics:
            key = f"{split}_{name}"
            if key in values:
                rows.append(f"| {shown} | {name} | {values[key]:.4f} |")
    run = metrics["run"]
    held_out = f"{config.eval_split:.0%} of train" if config.eval_split > 0 else "none"
    eval_source = config.eval_data or held_out
    length = f"{config.max_steps} steps" if config.max_steps > 0 else f"{config.epochs} epochs"
    settings = (
        f"{length}, lr {config.lr}, batch {config.batch_size}, max length {config.max_length}, "
        f"seed {config.seed}, precision {run['precision']}, device {run['device']}, "
        f"world size {run['world_size']}, attention {run['attention']}"
    )
    lines = [
        "---",
        "library_name: transformers",
        f"pipeline_tag: {task.pipeline_tag}",
        "---",
        f"# {title(config, run)} (bgcli)",
        "",
        f"- train data: `{config.train_data}`; eval: `{eval_source}`; test: `{config.test_data or 'none'}`",
        *[f"- {note}" for note in task.card_notes()],
        f"- {settings}",
        f"- wall time {run['wall_time_s']} s, {run['train_samples_per_second']} train samples/s"
        + (f", peak memory {run['peak_memory_mb']:,.0f} MB" if run.get("peak_memory_mb") else ""),
        *lora_lines(run),
        "",
        "| split | metric | value |",
        "|---|---|---|",
        *rows,
        "",
        *[f"![{p}]({p})" for p in plots],
        "",
        *task.report_lines(metrics),
        *sample_lines(metrics),
        f"Reproduce: `bgcli {run_command(run)} --recipe bgcli_config.yaml --output NEW_DIR`. "
        f"Use: `bgcli {task.head.command} -m THIS_DIR` or "
        f'`pipeline("{task.pipeline_tag}", model=THIS_DIR)`.',
        "",
    ]
    return "\n".join(lines)


def lora_lines(run: dict[str, Any]) -> list[str]:
    """With --lora: the adapters and the share of parameters trained; how to load them."""
    lora = run.get("lora")
    if not lora:
        return []
    saved = (
        "adapter/ only (-m THIS_DIR loads the base it names)"
        if lora["adapter_only"]
        else ("merged weights + adapter/")
    )
    return [
        f"- LoRA r={lora['r']} alpha={lora['alpha']:g} dropout={lora['dropout']:g} on {lora['targets']}: "
        f"{run['trainable_parameters']:,} parameters trained ({run['trainable_share']:.2%}); "
        f"saved as {saved}; "
        '`PeftModel.from_pretrained(base, "THIS_DIR/adapter")` loads the adapter'
    ]


def title(config, run: dict[str, Any]) -> str:
    scratch = run.get("from_scratch")
    if scratch:
        return f"pre-training from scratch: {scratch['summary']}"
    return f"{config.task} {'LoRA ' if config.lora else ''}fine-tune of `{config.model}`"


def run_command(run: dict[str, Any]) -> str:
    return "pretrain" if run.get("from_scratch") else "finetune"


def sample_lines(metrics: dict[str, Any]) -> list[str]:
    """Before/after outputs on the fixed prompts, so a reader sees what training changed."""
    after = metrics.get("samples_after") or []
    if not after:
        return []
    before = {s["prompt"]: s["output"] for s in metrics.get("samples_before") or []}
    lines = ["## Samples", ""]
    for sample in after:
        lines.append(f"**{sample['prompt']}**")
        if sample["prompt"] in before:
            lines.append(f"- before: {before[sample['prompt']]!r}")
        lines.append(f"- after: {sample['output']!r}")
        lines.append("")
    return lines
