"""What a `bgcli finetune` run dir holds, for the commands that meet one: finetune resumes
it, inference commands point at its checkpoints when it has no final model yet. Light:
pathlib only, so model resolution can use it before any heavy import."""

from __future__ import annotations

from pathlib import Path

RUN_CONFIG = "bgcli_config.yaml"


def resume_command(run_dir: Path) -> str:
    """The command that resumes the unfinished run in `run_dir`."""
    return f"bgcli finetune --recipe {run_dir / RUN_CONFIG} --output {run_dir} --resume auto"


def last_complete_checkpoint(run_dir: Path) -> str | None:
    """The newest checkpoint whose trainer_state.json (written last) exists: a run killed
    while saving leaves a partial checkpoint that must not be resumed from."""
    if not run_dir.is_dir():
        return None
    steps = []
    for folder in run_dir.glob("checkpoint-*"):
        suffix = folder.name.removeprefix("checkpoint-")
        if suffix.isdigit() and (folder / "trainer_state.json").is_file():
            steps.append((int(suffix), folder))
    return str(max(steps)[1]) if steps else None


def unfinished_run_message(spec: str, run_dir: Path) -> str | None:
    """For a run dir without a final model: how to get a model out of it (None: not a run dir)."""
    if not (run_dir / RUN_CONFIG).is_file():
        return None
    ways = []
    checkpoint = last_complete_checkpoint(run_dir)
    if checkpoint:
        ways.append(f"use its latest checkpoint (-m {checkpoint})")
    ways.append(f"resume it: {resume_command(run_dir)}")
    return f"'{spec}' is an unfinished `bgcli finetune` run (no final model yet); {' or '.join(ways)}"
