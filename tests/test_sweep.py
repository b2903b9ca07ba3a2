"""bgcli sweep: the space checked like a recipe, trials as run dirs whose metrics.json holds the
trial's value, resume (more trials; a killed trial retried), pruning, two processes sharing one
SQLite study, --keep, and --report-to tensorboard."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from .test_finetune import NEGATIVE, POSITIVE, write_csv


@pytest.fixture(scope="module")
def train_csv(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sweep-data")
    rows = [(f"{(POSITIVE if i % 2 else NEGATIVE)[i % 5]} {i}", "pos" if i % 2 else "neg") for i in range(40)]
    return write_csv(folder / "train.csv", rows)


def sweep_args(model: Path, data: Path, space: Path, out: Path, *more: str) -> list[str]:
    return [
        "sweep", "-m", str(model), "--train-data", str(data), "--space", str(space), "-o", str(out),
        "--max-steps", "4", "--eval-every", "2", "--eval-split", "0.25", "--batch-size", "8",
        "--precision", "fp32", "--format", "jsonl", *more,
    ]  # fmt: skip


def write_space(
    folder: Path, text: str = "lr: {low: 1.0e-5, high: 1.0e-3, log: true}\nwarmup: [0.0, 0.1]\n"
) -> Path:
    path = folder / "space.yaml"
    path.write_text(text)
    return path


def test_trials_are_run_dirs_with_their_value_and_the_study_resumes(cli, tiny_bert_dir, train_csv, tmp_path):
    """2 trials, then the same command with --trials 3 runs 1 more; each trial's value is the
    metric of its metrics.json; sweep.json, the plots and best -> the best trial; --keep best
    leaves weights only in the best trial."""
    space = write_space(tmp_path)
    out = tmp_path / "sweep"
    first = cli(sweep_args(tiny_bert_dir, train_csv, space, out, "--trials", "2", "--pruner", "none"))
    assert first.code == 0, first.stderr
    rows = [json.loads(line) for line in first.stdout.splitlines()]
    assert [r["trial"] for r in rows] == [0, 1] and all(r["state"] == "complete" for r in rows)
    for row in rows:
        metrics = json.loads((Path(row["run_dir"]) / "metrics.json").read_text())
        assert row["value"] == pytest.approx(metrics["eval"]["eval_f1_macro"])
        saved = (Path(row["run_dir"]) / "bgcli_config.yaml").read_text()
        assert f"lr: {row['params']['lr']}" in saved  # the trial trained with its parameters
    again = cli(sweep_args(tiny_bert_dir, train_csv, space, out, "--trials", "3", "--pruner", "none"))
    assert again.code == 0, again.stderr
    rows = [json.loads(line) for line in again.stdout.splitlines()]
    assert [r["trial"] for r in rows] == [0, 1, 2]
    assert len({r["params"]["lr"] for r in rows}) == 3  # the continuation draws new trials
    summary = json.loads((out / "sweep.json").read_text())
    best = max(rows, key=lambda r: r["value"])
    assert summary["best"]["value"] == best["value"] and summary["finished"] == 3
    assert (out / "best").resolve() == Path(summary["best"]["run_dir"]).resolve()
    assert (out / "history.png").stat().st_size > 0
    with_weights = [r["trial"] for r in rows if (Path(r["run_dir"]) / "model.safetensors").exists()]
    assert with_weights == [summary["best"]["trial"]]
    assert all((Path(r["run_dir"]) / "metrics.json").is_file() for r in rows)
    done = cli(sweep_args(tiny_bert_dir, train_csv, space, out, "--trials", "3"))
    assert done.code == 0 and "raise --trials" in done.stderr


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ("lrr: {low: 1.0e-5, high: 1.0e-3}\n", "did you mean 'lr'?"),
        ("output: [a, b]\n", "'output' in --space"),
        ("lr: {low: 1.0e-3, high: 1.0e-5}\n", "low (0.001) must be below high (1e-05)"),
        ("lr: {low: 0.0, high: 1.0e-3, log: true}\n", "a log range needs low > 0"),
        ("batch_size: {low: 0, high: 32}\n", "must be >= 1"),
        ("epochs: {low: 1, high: 3, log: true, step: 1}\n", "choose log or step"),
        ("lr: 0.001\n", "a fixed value belongs in the recipe"),
        ("scheduler: [linear, sideways]\n", "must be one of"),
        ("lr: {low: 1.0e-5, high: 1.0e-3, steps: 2}\n", "unknown range key(s) steps"),
        ("scheduler: {low: 1, high: 2}\n", "list its choices"),
    ],
)
def test_a_bad_space_is_one_line_before_anything_trains(cli, train_csv, tmp_path, space, message):
    path = write_space(tmp_path, space)
    result = cli(sweep_args(Path("no-such-model"), train_csv, path, tmp_path / "out"))
    assert result.code == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_sweep_refusals(cli, train_csv, tmp_path):
    space = write_space(tmp_path)
    no_eval = cli(sweep_args(Path("m"), train_csv, space, tmp_path / "a") + ["--eval-split", "0"])
    assert no_eval.code == 2 and "pass --eval-split" in no_eval.stderr
    grid = write_space(tmp_path, "lr: {low: 1.0e-5, high: 1.0e-3}\n")
    no_step = cli(sweep_args(Path("m"), train_csv, grid, tmp_path / "b") + ["--sampler", "grid"])
    assert no_step.code == 2 and "--sampler grid needs a step for 'lr'" in no_step.stderr
    many = cli(sweep_args(Path("m"), train_csv, space, tmp_path / "c") + ["--jobs", "999"])
    assert many.code == 2 and "cores" in many.stderr
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    refused = cli(sweep_args(Path("m"), train_csv, space, foreign))
    assert refused.code == 2 and "did not write" in refused.stderr
    assert (foreign / "notes.txt").read_text() == "mine"


def test_the_median_pruner_stops_trials_worse_than_the_median(tiny_bert_dir, train_csv, tmp_path):
    """Every evaluation is reported to the study; a pruned trial (worse than the median of the
    earlier ones at a step; the decision itself: test_pruning_decision_follows_the_median)
    stopped early and counts as finished."""
    import optuna

    from bertgpt_cli.api import sweep

    space = write_space(tmp_path, "lr: {low: 1.0e-6, high: 0.05, log: true}\n")
    summary = sweep(
        model=str(tiny_bert_dir), train_data=str(train_csv), space=str(space), output=str(tmp_path / "s"),
        max_steps=8, eval_every="2", eval_split=0.25, batch_size=8, precision="fp32", trials=4,
        sampler="random", metric="loss", quiet=True,
    )  # fmt: skip
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's' / 'study.db'}")
    study = optuna.load_study(study_name="s", storage=storage)
    reports = [t.intermediate_values for t in study.trials]
    assert all(len(r) >= 1 for r in reports)  # every evaluation reported
    states = [t["state"] for t in summary["trials"]]
    assert summary["finished"] >= 2 and set(states) <= {"complete", "pruned"}
    for trial in summary["trials"]:
        if trial["state"] == "pruned":
            log = (Path(trial["run_dir"]) / "log_history.jsonl").read_text().splitlines()
            assert max(json.loads(line).get("step", 0) for line in log) < 8


def test_pruning_decision_follows_the_median(tmp_path):
    """The callback reports to the trial and stops training exactly when optuna says prune."""
    import optuna
    from transformers import TrainerControl, TrainerState

    from bertgpt_cli.training.sweep import PruningCallback

    study = optuna.create_study(direction="minimize", pruner=optuna.pruners.MedianPruner(1, 1))
    for value in (0.2, 0.3):
        trial = study.ask()
        trial.report(value, 16)
        study.tell(trial, value)
    for loss, pruned in ((0.9, True), (0.1, False)):
        trial = study.ask()
        callback = PruningCallback(trial, "loss")
        state, control = TrainerState(), TrainerControl()
        state.global_step = 2
        callback.on_evaluate(training_args(batch_size=8), state, control, metrics={"eval_loss": loss})
        assert callback.pruned is pruned and control.should_training_stop is pruned
        assert trial.study._storage.get_trial(trial._trial_id).intermediate_values == {16: loss}


def test_the_last_evaluation_never_prunes(tmp_path):
    """A trial at its last step has nothing left to save: reported, but complete, whatever the
    median says (pruned there it would never count as a candidate for the best)."""
    import optuna
    from transformers import TrainerControl, TrainerState

    from bertgpt_cli.training.sweep import PruningCallback

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(1, 1))
    for value in (0.8, 0.9):
        trial = study.ask()
        trial.report(value, 64)
        study.tell(trial, value)
    trial = study.ask()
    callback = PruningCallback(trial, "accuracy")
    for max_steps, pruned in ((16, True), (8, False)):  # step 8 of 16: pruned; of 8: the end
        state, control = TrainerState(), TrainerControl()
        state.global_step, state.max_steps = 8, max_steps
        callback.on_evaluate(training_args(batch_size=8), state, control, metrics={"eval_accuracy": 0.5})
        assert trial.should_prune() and callback.pruned is pruned and control.should_training_stop is pruned
        callback.pruned = False


def training_args(batch_size: int, accumulation: int = 1):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir="unused", per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation, use_cpu=True, report_to="none",
    )  # fmt: skip


def test_trials_of_different_batch_sizes_are_compared_after_the_same_data():
    """The pruner's step is examples seen: batch 32 after 240 steps, batch 16 after 480, and
    batch 8 x 4 accumulation after 240 steps all report at step 7,680."""
    from transformers import TrainerState

    from bertgpt_cli.training.sweep import examples_seen

    steps = []
    for batch, accumulation, global_step in ((32, 1, 240), (16, 1, 480), (8, 4, 240)):
        state = TrainerState()
        state.global_step = global_step
        steps.append(examples_seen(training_args(batch, accumulation), state))
    assert steps == [7680, 7680, 7680]


def test_two_processes_share_one_sqlite_study(tiny_bert_dir, train_csv, tmp_path):
    """Two `bgcli sweep` processes on one study file: 3 trials in all, numbered once each."""
    from .conftest import BGCLI, ROOT

    space = write_space(tmp_path)
    out = tmp_path / "shared"
    args = sweep_args(tiny_bert_dir, train_csv, space, out, "--trials", "3", "--pruner", "none", "-q")
    procs = [
        subprocess.Popen(BGCLI + args[:], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outputs]
    summary = json.loads((out / "sweep.json").read_text())
    numbers = [t["trial"] for t in summary["trials"] if t["state"] == "complete"]
    assert len(numbers) >= 3 and len(set(numbers)) == len(numbers)
    assert all(Path(t["run_dir"]).name == f"trial-{t['trial']}" for t in summary["trials"])


def test_a_killed_trial_is_marked_failed_and_retried(tiny_bert_dir, train_csv, tmp_path):
    """SIGKILL the sweep inside its first trial: running again marks that trial failed (never
    complete) and runs its parameters again."""
    import signal

    from .conftest import BGCLI, ROOT

    space = write_space(tmp_path)
    out = tmp_path / "killed"
    args = sweep_args(tiny_bert_dir, train_csv, space, out, "--trials", "2", "--pruner", "none", "-q")
    args[args.index("--max-steps") + 1] = "400"  # long enough to be killed inside
    proc = subprocess.Popen(BGCLI + args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "trial-0" / "bgcli_config.yaml").is_file():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    args[args.index("--max-steps") + 1] = "4"
    resumed = subprocess.run(BGCLI + args[:-1], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "trial 0 did not finish" in resumed.stderr
    trials = {t["trial"]: t for t in json.loads((out / "sweep.json").read_text())["trials"]}
    assert trials[0]["state"] == "fail"
    retry = next(t for n, t in trials.items() if n > 0 and t["params"] == trials[0]["params"])
    assert retry["state"] == "complete"
    assert sum(t["state"] == "complete" for t in trials.values()) == 2


def test_report_to_tensorboard_writes_event_files_in_the_run_dir(cli, tiny_bert_dir, train_csv, tmp_path):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    result = cli(
        ["finetune", "-m", str(tiny_bert_dir), "--train-data", str(train_csv), "--max-steps", "2"]
        + ["--batch-size", "8", "--report-to", "tensorboard", "-o", str(run), "--eval-split", "0"]
    )
    assert result.code == 0, result.stderr
    events = list(run.glob("runs/**/events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_report_to_a_missing_package_is_one_line(cli, train_csv, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    result = cli(["finetune", "--train-data", str(train_csv), "--report-to", "mlflow"])
    assert result.code == 2 and "pip install mlflow" in result.stderr
