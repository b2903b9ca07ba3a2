"""Fine-tuning (`bgcli finetune`, `api.finetune`): the typed config of a run, its checks, and
the run itself: pick and lock the run dir, relaunch in N processes if asked, train
(`engine.train`), summarise.

The Trainer runs the loop (Accelerate inside maps it to CUDA > MPS > CPU).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from ..errors import BgcliError, ReportedFailure, UsageError
from ..io.console import info, set_verbosity, warn
from ..io.run_dirs import (
    LOCK_FILE,
    LOCK_HELD_ENV,
    RUN_MARKER,
    check_output_dir,
    last_complete_checkpoint,
    outside_working_dir,
    remove_init_dir,
    resume_command,
    run_dir_lock,
)
from .config import FinetuneConfig, validate

CONFIG = FinetuneConfig


def run(config: FinetuneConfig) -> tuple[Path, dict | None]:
    """Check and run: (the run dir, the summary record), as `run_training`."""
    validate(config)
    return run_training(config)


def run_training(
    config: FinetuneConfig, setup=None, saved_config=None, callbacks=()
) -> tuple[Path, dict | None]:
    """The run: pick and lock the run dir, relaunch in N processes if asked, train, summarise.
    `setup(run_dir, build)` prepares what the run starts from inside the locked run dir
    (`bgcli pretrain`: the model to initialise); `build` is False for the workers of a
    relaunched run, which reuse what their launcher prepared. Returns the run dir and the
    summary record; the summary is None where another process reports it (the launcher of
    a relaunched run, and ranks other than 0)."""
    from .launching import is_distributed_worker, is_main_process, relaunch

    if is_distributed_worker() and not is_main_process():
        set_verbosity(quiet=True, debug=config.debug)  # only rank 0 prints and writes
    if config.num_processes > 1 and not is_distributed_worker():
        run_dir = prepare_run_dir(config)  # decided once, here: workers must agree on it
        with created_for_this_run(run_dir), run_dir_lock(run_dir):
            if setup:
                setup(run_dir, True)
            held = {LOCK_HELD_ENV: str(run_dir.resolve())}  # the workers run under this lock
            code = relaunch(config.num_processes, ["--output", str(run_dir)], env=held)
            if code:
                raise ReportedFailure(code)
        return run_dir, None
    run_dir = prepare_run_dir(config)
    from .engine import train

    with created_for_this_run(run_dir), lock_unless_helper_rank(run_dir), disk_full_is_one_line(run_dir):
        if setup:
            setup(run_dir, not is_distributed_worker())
        with tracking_environment(config, run_dir):
            metrics = train(config, run_dir, saved_config, callbacks)
    return run_dir, summary_record(config, run_dir, metrics) if is_main_process() else None


@contextlib.contextmanager
def tracking_environment(config: FinetuneConfig, run_dir: Path):
    """Where --report-to writes by default: inside the run dir (TensorBoard's own default),
    MLflow's store under the tracking project's folder; a variable the user set wins."""
    import os

    if config.report_to != "mlflow":
        yield
        return
    defaults = {
        "MLFLOW_TRACKING_URI": (run_dir.resolve().parent / "mlruns").as_uri(),
        "MLFLOW_EXPERIMENT_NAME": config.tracking_project or run_dir.resolve().parent.name,
    }
    added = {k: v for k, v in defaults.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


@contextlib.contextmanager
def created_for_this_run(run_dir: Path):
    """Create the run dir and mark it as bgcli's; a run that fails before writing anything
    else into it (a typo in --train-data, a missing model) removes it again, so failed attempts
    leave no empty timestamped dirs. Anything written (config, checkpoints) and a dir that
    existed stay."""
    existed = run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_MARKER).touch()
    try:
        yield
    except BaseException:
        if not existed:
            for ours in (RUN_MARKER, LOCK_FILE):
                (run_dir / ours).unlink(missing_ok=True)
            remove_init_dir(run_dir)  # pretrain's weightless start: rebuilt by the next attempt
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # succeeds only when nothing else was written
        raise


@contextlib.contextmanager
def disk_full_is_one_line(run_dir: Path):
    """No space left: name the path, and offer the resume command only when a complete
    checkpoint exists (metrics.json is written last and atomically, so nothing looks finished)."""
    import errno

    try:
        yield
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        where = exc.filename or run_dir
        checkpoint = last_complete_checkpoint(run_dir)
        hint = (
            f"; free some space, then resume from {checkpoint}: {resume_command(run_dir)}"
            if checkpoint
            else "; free some space and run again"
        )
        raise BgcliError(f"no space left on device writing {where}{hint}") from exc


def lock_unless_helper_rank(run_dir: Path):
    """Rank 0 (or the only process) owns the run dir; under `accelerate launch` the other
    ranks run inside rank 0's ownership and must not contend for the lock."""
    from .launching import is_main_process

    return run_dir_lock(run_dir) if is_main_process() else contextlib.nullcontext()


def summary_record(config: FinetuneConfig, run_dir: Path, metrics: dict) -> dict:
    """The run's result, the command's data: the run dir, the metrics its task shows, speed."""
    from .tasks import task_class

    shown = task_class(config).card_metrics
    record = {"run_dir": str(run_dir)}
    for split in ("before", "eval", "test"):
        for key, value in metrics.get(split, {}).items():
            if key == f"{split}_loss" or key.removeprefix(f"{split}_") in shown:
                record[key] = round(value, 4)
    run_info = metrics["run"]
    record.update(
        wall_time_s=run_info["wall_time_s"],
        train_samples_per_second=run_info["train_samples_per_second"],
        precision=run_info["precision"],
        world_size=run_info["world_size"],
    )
    return record


def prepare_run_dir(config: FinetuneConfig) -> Path:
    """Where this run writes, after checking it may (created by `created_for_this_run`)."""
    if config.output:
        run_dir = Path(config.output)
    else:
        stem = Path(config.recipe).stem if config.recipe else config.task
        run_dir = Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    from .launching import is_distributed_worker, is_main_process, world_size

    if is_main_process():
        check_output_dir(run_dir)
        if outside_working_dir(run_dir) and not is_distributed_worker():
            warn(f"--output '{run_dir}' is outside the current directory ({run_dir.resolve()})")
    finished = (run_dir / "metrics.json").is_file()
    if finished and not config.overwrite:
        raise UsageError(
            f"{run_dir} holds a finished run; pass --overwrite to replace it or choose another --output"
        )
    if config.resume and not config.output:
        raise UsageError("--resume needs --output: the run dir to resume")
    if world_size() > 1 and not config.output:  # each process would pick its own timestamp
        raise UsageError(
            "under torchrun / accelerate launch pass --output DIR, the same for every process "
            "(`bgcli finetune --num-processes N` picks one for you)"
        )

    if run_dir.exists() and not finished and not config.resume and not is_distributed_worker():
        checkpoint = last_complete_checkpoint(run_dir)
        if checkpoint is not None and not config.overwrite:  # a restart would delete it
            raise UsageError(
                f"{run_dir} holds an unfinished run ({Path(checkpoint).name}); continue it with "
                "--resume auto, or pass --overwrite to start again from step 0"
            )
        if any(p.name not in (RUN_MARKER, LOCK_FILE) for p in run_dir.iterdir()):
            warn(f"{run_dir} holds an unfinished run; its files will be replaced")
    info(f"run dir: {run_dir}")
    return run_dir
