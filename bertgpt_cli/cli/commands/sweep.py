"""`bgcli sweep`: hyper-parameter search on optuna over finetune runs (engine: training/sweep.py);
prints one row per trial and writes DIR/sweep.json."""

from __future__ import annotations

from ...io.output import RecordWriter
from ...training import sweep

NAME = "sweep"
HELP = "Search hyper-parameters (optuna): trials as finetune run dirs, a study database, pruning, resume."
EXAMPLES = (
    "bgcli sweep --recipe rt-minilm --space space.yaml --trials 20 -o sweeps/rt",
    "bgcli sweep --recipe rt-minilm --space space.yaml --trials 30 -o sweeps/rt   # continues the study",
    "bgcli sweep --recipe rt-minilm --space space.yaml --storage postgresql://host/db --study-name rt",
    "bgcli classify -m sweeps/rt/best 'a gripping film'",
)
CONFIG = sweep.SweepConfig


def run(config: sweep.SweepConfig) -> None:
    summary = sweep.run(config)
    writer = RecordWriter(config.format, title=f"bgcli sweep: {summary['study']} ({summary['metric']})")
    for trial in summary["trials"]:
        writer.write(trial)
    writer.close()
