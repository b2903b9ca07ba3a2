"""Hyper-parameter search (`bgcli sweep`, `api.sweep`) on optuna: a study in a real database
(SQLite in the sweep dir by default; any RDB URL lets sweeps on several machines share it), each
trial an ordinary finetune run dir `DIR/trial-N` whose metrics.json holds the trial's value.

The search space is a YAML file of finetune's recipe keys, each a range or a list of choices,
checked like a recipe before anything trains. Intermediate eval metrics are reported to the
pruner at every evaluation. Running the same command again continues the study: finished
trials count towards --trials, and a trial whose process died (Ctrl-C, kill, a lost machine)
is marked failed and retried with the same parameters, never counted as complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BgcliError, UsageError, first_line
from ..io.console import info, warn
from ..options import base_type, check_bounds, coerce_recipe_value, config_fields, option
from .config import FinetuneConfig, validate

PANEL = "Sweep"
SWEEP_MARKER = ".bgcli-sweep"
# Keys a space may not search: where and how the run is written, not what it trains.
NOT_SEARCHABLE = {
    "output",
    "recipe",
    "task",
    "overwrite",
    "resume",
    "report_to",
    "run_name",
    "tracking_project",
    "num_processes",
    "quiet",
    "debug",
    "format",
}
RANGE_KEYS = {"low", "high", "log", "step"}
FAILURES_IN_A_ROW = 3  # a sweep whose trials keep failing stops instead of burning its budget


@dataclass
class SweepConfig(FinetuneConfig):
    output: str | None = option(
        None,
        "Sweep dir: study.db, sweep.json, plots, trial-N run dirs, best -> the best trial "
        "(default sweeps/<recipe or task>; the same dir again continues the study).",
        short="-o",
        panel=PANEL,
        metavar="DIR",
    )
    space: str | None = option(
        None,
        "YAML search space: finetune recipe keys, each {low, high[, log, step]} or a list of choices, "
        "e.g. lr: {low: 1.0e-5, high: 1.0e-3, log: true}; batch_size: [16, 32].",
        panel=PANEL,
        metavar="FILE",
    )
    trials: int = option(20, "Finished trials (complete or pruned) the study should hold.", panel=PANEL, ge=1)
    timeout: float | None = option(
        None, "Start no new trial after this many minutes.", panel=PANEL, gt=0, metavar="MINUTES"
    )
    sampler: str = option(
        "tpe",
        "tpe (Bayesian), random, or grid (every combination; ranges need a step).",
        choices=("tpe", "random", "grid"),
        panel=PANEL,
    )
    pruner: str = option(
        "median",
        "median: stop a trial whose eval metric is worse than the median of earlier trials after "
        "as many training examples (after 2 trials); none: run every trial to the end.",
        choices=("median", "none"),
        panel=PANEL,
    )
    storage: str | None = option(
        None,
        "optuna storage URL (default sqlite:///DIR/study.db); a PostgreSQL / MySQL URL lets sweeps "
        "on several machines share the study.",
        panel=PANEL,
        metavar="URL",
    )
    study_name: str | None = option(None, "Study name (default: the sweep dir's name).", panel=PANEL)
    keep: str = option(
        "best",
        "best: remove the weights of every trial but the best once it ends (metrics and reports "
        "stay); all: keep every trial's model.",
        choices=("best", "all"),
        panel=PANEL,
    )
    jobs: int = option(
        1, "Trials at once on this machine; each gets cores / N threads (never more).", panel=PANEL, ge=1
    )
    worker: int = dataclasses.field(default=0)  # not a flag: the index of a --jobs worker process


# --- the search space ---------------------------------------------------------------------------


@dataclass
class Dimension:
    """One searched key: a list of choices, or a numeric range."""

    name: str
    choices: list | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False

    def suggest(self, trial) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.name, self.choices)
        if self.integer:
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def grid(self) -> list:
        """Every value, for --sampler grid."""
        if self.choices is not None:
            return list(self.choices)
        if self.step is None and not self.integer:
            raise UsageError(
                f"--sampler grid needs a step for '{self.name}' (a float range has no finite grid)"
            )
        step = self.step or 1
        count = int(round((self.high - self.low) / step)) + 1
        values = [self.low + i * step for i in range(count) if self.low + i * step <= self.high + 1e-12]
        return [int(v) for v in values] if self.integer else [round(v, 12) for v in values]


def read_space(path: str) -> list[Dimension]:
    """The space file as dimensions, every value checked as a recipe value of that key (type,
    choices, bounds): one line naming the key and the file, before anything trains."""
    import typing

    import yaml

    from .recipes import NON_RECIPE_KEYS

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"--space file '{path}' not found; pass a YAML file of recipe keys")
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"--space {path} is not valid YAML: {first_line(exc)}") from exc
    if not isinstance(data, dict) or not data:
        raise UsageError(f"--space {path} must map recipe keys to ranges or lists of choices")
    fields = {f.name: f for f in config_fields(FinetuneConfig)}
    hints = typing.get_type_hints(FinetuneConfig)
    searchable = sorted(set(fields) - NON_RECIPE_KEYS - NOT_SEARCHABLE)
    dimensions = []
    for key, value in data.items():
        if key not in searchable:
            close = difflib.get_close_matches(str(key), searchable, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "a space searches finetune's recipe keys"
            reason = "cannot be searched" if key in fields else "is not a finetune recipe key"
            raise UsageError(f"'{key}' in --space {path} {reason}; {hint}")
        where = f"'{key}' in --space {path}"
        dimensions.append(dimension(key, value, fields[key], hints[key], where))
    return dimensions


def dimension(key: str, value: Any, field, annotation, where: str) -> Dimension:
    if isinstance(value, list):
        if not value:
            raise UsageError(f"{where} lists no choices")
        choices = []
        for item in value:
            item = coerce_recipe_value(field, annotation, item, where)
            check_bounds(field, item, where)
            if isinstance(item, list):
                raise UsageError(f"{where}: each choice must be a single value")
            if item not in choices:
                choices.append(item)
        return Dimension(key, choices=choices)
    if not isinstance(value, dict):
        raise UsageError(
            f"{where} must be a range {{low: ..., high: ...}} or a list of choices; a fixed value "
            "belongs in the recipe or on the command line"
        )
    unknown = set(value) - RANGE_KEYS
    if unknown:
        raise UsageError(
            f"{where} has unknown range key(s) {', '.join(sorted(map(str, unknown)))}; "
            "use low, high, log, step"
        )
    kind = base_type(annotation)
    if kind not in (int, float):
        raise UsageError(f"{where} is not a number: list its choices instead of a range")
    if "low" not in value or "high" not in value:
        raise UsageError(f"{where} needs both low and high")
    low, high = (coerce_recipe_value(field, annotation, value[k], f"{where} {k}") for k in ("low", "high"))
    step = coerce_recipe_value(field, annotation, value["step"], f"{where} step") if "step" in value else None
    log = value.get("log", False)
    if not isinstance(log, bool):
        raise UsageError(f"{where} log must be true or false, not {log!r}")
    for bound in (low, high):
        check_bounds(field, bound, where)
    if not low < high:
        raise UsageError(f"{where}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise UsageError(f"{where}: a log range needs low > 0, not {low}")
    if log and step is not None:
        raise UsageError(f"{where}: choose log or step, not both (optuna samples one or the other)")
    if step is not None and step <= 0:
        raise UsageError(f"{where}: step must be > 0, not {step}")
    return Dimension(key, low=low, high=high, log=log, step=step, integer=kind is int)


# --- the study ----------------------------------------------------------------------------------


def sweep_dir(config: SweepConfig) -> Path:
    if config.output:
        return Path(config.output)
    return Path("sweeps") / (Path(config.recipe).stem if config.recipe else config.task)


def check_sweep_dir(folder: Path) -> None:
    """A new or empty folder, or an earlier sweep's: never someone else's files."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--output '{folder}' is a file; name a folder for the sweep")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / SWEEP_MARKER).is_file():
        raise UsageError(
            f"--output '{folder}' holds files bgcli did not write; name a new or empty folder for the sweep"
        )


def storage_url(config: SweepConfig, folder: Path) -> str:
    return config.storage or f"sqlite:///{(folder / 'study.db').resolve()}"


def shown_url(url: str) -> str:
    """The URL without its password, for logs and sweep.json."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


def open_study(config: SweepConfig, folder: Path, direction: str, space: list[Dimension]):
    """Create or load the study (the same name in the same storage continues it)."""
    import warnings

    import optuna

    url = storage_url(config, folder)
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # the heartbeat
    with setup_lock(folder):
        return _open_study(config, folder, direction, space, url, kwargs)


@contextlib.contextmanager
def setup_lock(folder: Path):
    """Processes of this machine open the study one at a time: two creating a new database's
    tables (and alembic's version stamp) at the same moment collide."""
    import fcntl

    with open(folder / ".study.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open_study(config: SweepConfig, folder: Path, direction: str, space, url: str, kwargs: dict):
    import optuna

    storage = rdb_storage(url, kwargs)
    name = config.study_name or folder.resolve().name
    earlier = 0
    try:
        earlier = len(optuna.load_study(study_name=name, storage=storage).trials)
    except KeyError:  # a new study
        pass
    try:
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            direction=direction,
            sampler=make_sampler(config, space, earlier),
            pruner=make_pruner(config),
            load_if_exists=True,
        )
    except ValueError as exc:  # e.g. the stored study optimises the other way
        raise UsageError(f"study '{name}' in {shown_url(url)}: {first_line(exc)}") from exc
    if study.direction.name.lower() != direction:
        raise UsageError(
            f"study '{name}' in {shown_url(url)} was created to {study.direction.name.lower()} its value; "
            f"this sweep's metric wants {direction}: use another --study-name"
        )
    return study


def rdb_storage(url: str, engine_kwargs: dict):
    """optuna's RDB storage; processes of several machines creating a new database's tables at
    the same moment collide: the later one waits and opens what the first created."""
    import time

    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=30,
                grace_period=120,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2),
            )
        except SQLAlchemyError as exc:  # another machine creating the same database's tables
            if attempt == 4:
                raise UsageError(f"--storage {shown_url(url)}: {first_line(exc)}") from exc
            time.sleep(0.5 + attempt)
        except (ImportError, ValueError, optuna.exceptions.StorageInternalError) as exc:
            raise UsageError(f"--storage {shown_url(url)}: {first_line(exc)}") from exc
    raise AssertionError("unreachable")


def make_sampler(config: SweepConfig, space: list[Dimension], earlier_trials: int):
    import optuna

    # Each --jobs worker, and each continuation of the study, draws its own random trials (the
    # same seed again would propose the trials the study already ran).
    seed = config.seed + 1000 * config.worker + earlier_trials
    if config.sampler == "grid":
        return optuna.samplers.GridSampler({d.name: d.grid() for d in space}, seed=seed)
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(config: SweepConfig):
    import optuna

    if config.pruner == "none":
        return optuna.pruners.NopPruner()
    # Step 0 is the evaluation before training (--eval-before): never a reason to stop.
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)


def finished_count(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def retry_dead_trials(study) -> None:
    """Trials left running by a process of this machine that is gone (killed, Ctrl-C), or
    failed by an interruption: marked failed and queued again with the same parameters, once.
    Trials of other machines are left to optuna's heartbeat (failed after its grace period)."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for trial in trials:
        dead = (
            trial.state == TrialState.RUNNING
            and trial.user_attrs.get("host") == host
            and not process_alive(trial.user_attrs.get("pid"))
        )
        if dead:  # optuna has no public call to end another process's trial: its storage API does
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        interrupted = trial.state == TrialState.FAIL and trial.user_attrs.get("interrupted")
        if (dead or interrupted) and trial.number not in retried:
            info(f"trial {trial.number} did not finish (its process ended); running it again")
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})


def process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- trials -------------------------------------------------------------------------------------


class Objective:
    """One trial: a finetune run in DIR/trial-N with the trial's parameters; its value is the
    metric in the run's metrics.json."""

    def __init__(self, config: SweepConfig, folder: Path, space: list[Dimension], metric: str):
        self.config, self.folder, self.space, self.metric = config, folder, space, metric
        self.failures_in_a_row = 0

    def __call__(self, trial) -> float:
        import optuna

        params = {d.name: d.suggest(trial) for d in self.space}
        run_dir = self.folder / f"trial-{trial.number}"
        for key, value in {"run_dir": str(run_dir), "host": socket.gethostname(), "pid": os.getpid()}.items():
            trial.set_user_attr(key, value)
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        info(f"trial {trial.number}: {shown}")
        pruning = PruningCallback(trial, self.metric)
        try:
            self.train(trial_config(self.config, params, run_dir, trial.number), pruning)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        except BgcliError as exc:
            self.failures_in_a_row += 1
            warn(f"trial {trial.number} failed: {first_line(exc)}")
            if self.failures_in_a_row >= FAILURES_IN_A_ROW:
                trial.study.stop()
            raise
        self.failures_in_a_row = 0
        value = run_value(run_dir, self.metric)
        if pruning.pruned:
            where = f"after {pruning.examples} examples ({self.metric} {pruning.value:.4f})"
            info(f"trial {trial.number} pruned {where}")
            raise optuna.TrialPruned()
        info(f"trial {trial.number}: {self.metric} {value:.4f}")
        return value

    def train(self, config: FinetuneConfig, pruning) -> None:
        from .finetune import run_training

        validate(config)
        run_training(config, callbacks=[pruning])


def trial_config(config: SweepConfig, params: dict[str, Any], run_dir: Path, number: int) -> FinetuneConfig:
    """The sweep's finetune settings with the trial's parameters, written to its run dir."""
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(FinetuneConfig)}
    values |= params
    values |= {
        "output": str(run_dir),
        "quiet": True,
        "overwrite": False,
        "resume": None,
        "recipe": None,
        "test_data": None,  # selection reads eval data only; the test is for after the sweep
        "run_name": f"trial-{number}",
        "tracking_project": config.study_name or run_dir.parent.resolve().name,
    }
    return FinetuneConfig(**values)


def run_value(run_dir: Path, metric: str) -> float:
    """The trial's value: the eval metric its metrics.json reports."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    evaluation = metrics.get("eval") or {}
    key = f"eval_{metric}"
    if key not in evaluation:
        have = ", ".join(k.removeprefix("eval_") for k in evaluation if k.startswith("eval_"))
        raise UsageError(f"the trials report no '{metric}' (they report: {have}); choose --metric")
    return float(evaluation[key])


def pruning_callback_class():
    from transformers import TrainerCallback

    class _Pruning(TrainerCallback):
        """Reports each evaluation's metric to optuna; stops training when the pruner says so
        (the run then ends normally: saved, metrics written, marked pruned)."""

        def __init__(self, trial, metric: str):
            self.trial, self.metric = trial, metric
            self.pruned, self.examples, self.value = False, 0, float("nan")

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            value = (metrics or {}).get(f"eval_{self.metric}")
            if value is None or not state.is_world_process_zero:
                return
            seen = examples_seen(args, state)
            self.trial.report(float(value), seen)
            finished = state.max_steps and state.global_step >= state.max_steps
            # After the last step nothing is left to save: the trial is complete with its value
            # (pruned there, a fully trained trial would not count as a candidate for the best).
            if not finished and self.trial.should_prune():
                self.pruned, self.examples, self.value = True, seen, float(value)
                control.should_training_stop = True

    return _Pruning


def examples_seen(args, state) -> int:
    """The pruner's step: training examples seen so far, not optimizer steps, so that trials of
    different batch sizes are compared after the same amount of data (at the end of epoch 1, a
    batch-16 trial is at step 480 and a batch-32 one at step 240: the median pruner would only
    ever compare each with its own batch size)."""
    per_step = args.train_batch_size * args.gradient_accumulation_steps * args.world_size
    return state.global_step * per_step


def PruningCallback(trial, metric: str):  # noqa: N802 - a class made on first use (transformers is heavy)
    return pruning_callback_class()(trial, metric)


# --- keeping the best -----------------------------------------------------------------------------

WEIGHT_FILES = ("*.safetensors", "*.bin", "optimizer.pt", "scheduler.pt")


def best_trial(study):
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return study.best_trial if complete else None


def after_trial(config: SweepConfig, folder: Path):
    """optuna callback after each trial: point DIR/best at the best run, and with --keep best
    remove the weights of every other finished trial of this sweep dir."""
    from optuna.trial import TrialState

    def callback(study, _trial) -> None:
        best = best_trial(study)
        if best is not None:
            point_best_link(folder, Path(best.user_attrs["run_dir"]))
        if config.keep != "best":
            return
        finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        for trial in study.get_trials(deepcopy=False, states=finished):
            run_dir = Path(trial.user_attrs.get("run_dir", ""))
            if run_dir.parent.resolve() == folder.resolve():  # only this sweep dir's trials
                is_best = best is not None and trial.number == best.number
                remove_weights(run_dir, keep_model=is_best)

    return callback


def remove_weights(run_dir: Path, keep_model: bool = False) -> None:
    """The checkpoints of a finished trial, and its model unless `keep_model` (the best's);
    its metrics, config and report stay."""
    import shutil

    if not run_dir.is_dir():
        return
    for checkpoint in run_dir.glob("checkpoint-*"):
        shutil.rmtree(checkpoint, ignore_errors=True)
    if keep_model:
        return
    for pattern in WEIGHT_FILES:
        for path in run_dir.glob(pattern):
            path.unlink(missing_ok=True)
    adapter = run_dir / "adapter"
    if adapter.is_dir():
        shutil.rmtree(adapter, ignore_errors=True)


def point_best_link(folder: Path, run_dir: Path) -> None:
    """DIR/best -> trial-N (relative, replaced atomically)."""
    link = folder / "best"
    if link.exists() and not link.is_symlink():
        return  # never replace a folder someone put there
    if link.is_symlink() and os.readlink(link) == run_dir.name:
        return
    temporary = folder / f".best-{os.getpid()}"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(run_dir.name)
    os.replace(temporary, link)


# --- the run ------------------------------------------------------------------------------------


def check(config: SweepConfig) -> tuple[list[Dimension], str, str]:
    """Everything that can be refused before a trial trains: (space, metric, direction)."""
    from .engine import best_metric
    from .tasks import task_class

    if not config.space:
        raise UsageError("pass --space FILE.yaml: the recipe keys to search and their ranges")
    space = read_space(config.space)
    probe = trial_config(config, {}, sweep_dir(config) / "trial-0", 0)
    validate(probe)
    if not (config.eval_data or config.eval_split > 0):
        raise UsageError("a sweep compares trials on eval data: pass --eval-split (> 0) or --eval-data")
    cores = available_cores()
    if config.jobs > cores:
        raise UsageError(
            f"--jobs {config.jobs} is more than this machine's {cores} cores; use at most {cores}"
        )
    if config.jobs > 1 and config.num_processes > 1:
        raise UsageError("--jobs runs trials side by side; drop --num-processes (or use --jobs 1)")
    if config.test_data:
        info("the trials leave the test data alone (selection on eval data): score the best with bgcli eval")
    metric, greater = best_metric(config, task_class(config))
    return space, metric, "maximize" if greater else "minimize"


def run(config: SweepConfig) -> dict[str, Any]:
    """Run (or continue) the study; the summary (also DIR/sweep.json)."""
    import optuna

    space, metric, direction = check(config)
    folder = sweep_dir(config)
    check_sweep_dir(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SWEEP_MARKER).touch()
    # ERROR: a failed trial is reported once, by us, in one line (optuna's warning adds a traceback).
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = open_study(config, folder, direction, space)
    if config.worker == 0:
        retry_dead_trials(study)
        where = shown_url(storage_url(config, folder))
        info(
            f"study '{study.study_name}' in {where}: {metric} ({direction}), "
            f"{finished_count(study)} of {config.trials} trials finished"
        )
    workers = start_workers(config) if config.jobs > 1 and config.worker == 0 else []
    try:
        optimize(config, study, folder, space, metric)
    except KeyboardInterrupt:
        if config.worker == 0:  # what finished so far stays readable: sweep.json, plots, best
            with contextlib.suppress(BgcliError):
                report(config, study, folder, metric, direction)
        raise
    finally:
        for worker in workers:
            code = worker.wait()
            if code:
                warn(f"a --jobs worker exited with status {code}")
    if config.worker:
        return {}
    return report(config, study, folder, metric, direction)


def optimize(config: SweepConfig, study, folder: Path, space, metric: str) -> None:
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    if finished_count(study) >= config.trials:
        if config.worker == 0:
            info(f"the study already holds {config.trials} finished trials; raise --trials to run more")
        return
    set_threads(config)
    objective = Objective(config, folder, space, metric)
    study.optimize(
        objective,
        n_trials=None,
        timeout=config.timeout * 60 if config.timeout else None,
        catch=(BgcliError,),
        callbacks=[
            MaxTrialsCallback(config.trials, states=(TrialState.COMPLETE, TrialState.PRUNED)),
            after_trial(config, folder),
        ],
        gc_after_trial=True,
    )
    if objective.failures_in_a_row >= FAILURES_IN_A_ROW:
        raise BgcliError(f"{FAILURES_IN_A_ROW} trials in a row failed (see above); the sweep stopped")


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_threads(config: SweepConfig) -> None:
    """--jobs N: each trial process gets cores / N threads."""
    if config.jobs <= 1:
        return
    import torch

    cores = available_cores()
    torch.set_num_threads(max(1, cores // config.jobs))


def start_workers(config: SweepConfig) -> list[subprocess.Popen]:
    """--jobs N: N - 1 more processes running the same study (the parent is the first)."""
    cores = available_cores()
    threads = str(max(1, cores // config.jobs))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    workers = []
    for index in range(1, config.jobs):
        values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)} | {"worker": index}
        values.pop("explicit", None)
        command = [sys.executable, "-m", "bertgpt_cli.training.sweep", json.dumps(values)]
        workers.append(subprocess.Popen(command, env=env))
    info(f"{config.jobs} trials at a time, {threads} threads each")
    return workers


def report(config: SweepConfig, study, folder: Path, metric: str, direction: str) -> dict[str, Any]:
    """sweep.json, the plots, and the summary record."""
    from ..io.atomic import write_text_atomically

    trials = [trial_record(t) for t in study.get_trials(deepcopy=False)]
    best = best_trial(study)
    summary = {
        "sweep_dir": str(folder),
        "study": study.study_name,
        "storage": shown_url(storage_url(config, folder)),
        "metric": metric,
        "direction": direction,
        "finished": finished_count(study),
        "best": trial_record(best) if best is not None else None,
        "best_dir": str(folder / "best") if best is not None else None,
        "trials": trials,
    }
    write_text_atomically(folder / "sweep.json", json.dumps(summary, indent=2) + "\n")
    write_plots(study, folder)
    if best is None:
        raise BgcliError(f"no trial finished with a value; see {folder / 'sweep.json'}")
    return summary


def trial_record(trial) -> dict[str, Any]:
    duration = trial.duration.total_seconds() if trial.duration else None
    return {
        "trial": trial.number,
        "state": trial.state.name.lower(),
        "value": trial.value,
        "params": dict(trial.params),
        "seconds": round(duration, 1) if duration is not None else None,
        "run_dir": trial.user_attrs.get("run_dir"),
    }


def write_plots(study, folder: Path) -> None:
    """optuna's value-by-trial history and parameter importances (matplotlib PNGs)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
        for name, draw in (
            ("history.png", plots.plot_optimization_history),
            ("importances.png", plots.plot_param_importances),
        ):
            try:
                axes = draw(study)
                axes.figure.tight_layout()
                axes.figure.savefig(folder / name, dpi=110)
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # too few finished trials
                if name == "importances.png":
                    info(f"no parameter importances yet ({first_line(exc)})")
            finally:
                plt.close("all")


def _worker_main(argument: str) -> None:
    """`python -m bertgpt_cli.training.sweep CONFIG_JSON`: a --jobs worker."""
    from ..io.console import set_verbosity

    values = json.loads(argument)
    config = SweepConfig(**values)
    set_verbosity(quiet=True, debug=config.debug)
    try:
        run(config)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    _worker_main(sys.argv[1])
