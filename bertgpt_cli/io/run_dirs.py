"""What a `bgcli finetune` run dir holds, for the commands that meet one: finetune resumes
it, inference commands point at its checkpoints when it has no final model yet. Light:
pathlib only, so model resolution can use it before any heavy import."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from ..errors import UsageError

RUN_CONFIG = "bgcli_config.yaml"


def read_run_config(location: str | Path) -> dict:
    """A run dir's bgcli_config.yaml (the settings it was trained with), {} for any other
    folder or an unreadable file: the one reader of that file."""
    path = Path(location) / RUN_CONFIG
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def resume_command(run_dir: Path) -> str:
    """The command that resumes the unfinished run in `run_dir` (a `bgcli pretrain` run records
    its architecture: `arch:` in its config)."""
    config = run_dir / RUN_CONFIG
    command = "pretrain" if "arch" in read_run_config(run_dir) else "finetune"
    return f"bgcli {command} --recipe {config} --output {run_dir} --resume auto"


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
    return f"'{spec}' is an unfinished bgcli training run (no final model yet); {' or '.join(ways)}"


# A run dir is bgcli's when it holds the resolved config (written first by every run) or the
# marker written when the run dir is created, before anything else.
RUN_MARKER = ".bgcli-run"
LOCK_FILE = ".bgcli-lock"
# Set for the workers of a run whose launcher already holds the run dir's lock.
LOCK_HELD_ENV = "BGCLI_RUN_LOCK_HELD"
FINAL_TEMP = ".final-tmp"


# `bgcli pretrain` writes the weightless model it starts from here (config, tokenizer, marker).
INIT_DIR = "init"
FROM_SCRATCH_MARKER = "bgcli_from_scratch.json"


def is_bgcli_run_dir(path: Path) -> bool:
    return (
        (path / RUN_CONFIG).is_file()
        or (path / RUN_MARKER).is_file()
        or (path / INIT_DIR / FROM_SCRATCH_MARKER).is_file()
    )


def remove_init_dir(run_dir: Path) -> None:
    """A failed pre-training start's init/ (only when it is bgcli's: it holds the marker)."""
    import shutil

    if (run_dir / INIT_DIR / FROM_SCRATCH_MARKER).is_file():
        shutil.rmtree(run_dir / INIT_DIR, ignore_errors=True)


def check_output_dir(run_dir: Path) -> None:
    """Only a new or empty dir, or a bgcli run dir, may be written: never someone else's files
    (`--overwrite` replaces a finished run, not a folder of other files)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--output '{run_dir}' is a file; choose a new or empty directory")
    if not run_dir.is_dir() or is_bgcli_run_dir(run_dir):
        return
    foreign = sorted(p.name for p in run_dir.iterdir())
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise UsageError(
            f"--output '{run_dir}' holds files bgcli did not write ({shown}); "
            "choose a new or empty directory (bgcli never overwrites other files, --overwrite included)"
        )


def outside_working_dir(run_dir: Path) -> bool:
    try:
        run_dir.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return True
    return False


@contextmanager
def run_dir_lock(run_dir: Path):
    """Hold an exclusive lock on the run dir for the whole run, so a second run into the same
    dir is refused instead of mixing files. flock is released by the kernel when the process
    ends, however it ends: the lock file of a killed run is stale and simply taken over."""
    import fcntl

    if os.environ.get(LOCK_HELD_ENV) == str(run_dir.resolve()):
        yield  # a worker of a run whose launcher holds the lock
        return
    handle = open(run_dir / LOCK_FILE, "a+")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            raise UsageError(
                f"another bgcli run (pid {owner}) is writing to '{run_dir}'; wait for it to end "
                "or choose another --output"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        remove_failed_save(run_dir)  # left by a killed run; safe: we own the dir now
        yield
    finally:
        handle.close()  # releases the lock


def remove_failed_save(run_dir: Path) -> None:
    """The temp folder of a final save that failed or was killed (a model's worth of bytes)."""
    shutil.rmtree(run_dir / FINAL_TEMP, ignore_errors=True)
