"""finetune (classification): run dir contents, labels, reproducibility, recipes, errors."""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from bertgpt_cli.training.finetune import FinetuneConfig
from bertgpt_cli.training.recipes import PACKAGE_RECIPES, find_recipe, read_recipe, validate_keys

POSITIVE = ["great film", "wonderful acting", "loved it", "a fun and charming comedy", "the best picture"]
NEGATIVE = ["boring plot", "terrible film", "dull and predictable", "bad acting", "i want my money back"]


def write_csv(path: Path, rows) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def reviews(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("reviews")
    rows = [(f"{(POSITIVE if i % 2 else NEGATIVE)[i % 5]} {i}", "pos" if i % 2 else "neg") for i in range(80)]
    return {
        "train": write_csv(folder / "train.csv", rows),
        "test": write_csv(folder / "test.csv", rows[:20]),
        "unseen": write_csv(folder / "unseen.csv", [("so so", "meh")]),
        "ints": write_csv(folder / "ints.csv", [(t, 1 if lab == "pos" else 0) for t, lab in rows]),
    }


def finetune(cli, model_dir, out: Path, *extra: str):
    args = [
        "finetune",
        "-m",
        str(model_dir),
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--lr",
        "3e-3",
        "--output",
        str(out),
        "--quiet",
        "--format",
        "jsonl",
        *extra,
    ]
    return cli(args)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_bert_dir, reviews):
    from .conftest import run_cli

    out = tmp_path_factory.mktemp("runs") / "rt"
    result = finetune(
        run_cli,
        tiny_bert_dir,
        out,
        "--train-data",
        str(reviews["train"]),
        "--test-data",
        str(reviews["test"]),
    )
    assert result.code == 0, result.stderr
    return out, json.loads(result.stdout)


def test_run_dir_holds_model_report_and_config(finished_run):
    out, summary = finished_run
    for name in (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "bgcli_config.yaml",
        "metrics.json",
        "log_history.jsonl",
        "README.md",
        "loss.png",
        "confusion_matrix.png",
    ):
        assert (out / name).is_file(), name
    assert not (out / "training_args.bin").exists() and not (out / "pytorch_model.bin").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"}  # real names, sorted
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"train", "eval", "test", "run"} <= set(metrics)
    from bertgpt_cli.models.devices import cpu_bf16_units

    expected_precision = "bf16" if cpu_bf16_units() else "fp32"  # auto on a CPU
    assert metrics["run"]["world_size"] == 1 and metrics["run"]["precision"] == expected_precision
    assert metrics["run"]["attention"] == "eager"  # CPU + attention dropout (see the test below)
    assert summary["test_accuracy"] == pytest.approx(metrics["test"]["test_accuracy"], abs=1e-4)
    assert len(metrics["test_report"]["confusion_matrix"]) == 2
    assert all(json.loads(line) for line in (out / "log_history.jsonl").read_text().splitlines())


def test_the_run_dir_loads_in_pipeline_and_classify(cli, finished_run):
    from transformers import pipeline

    out, _ = finished_run
    classifier = pipeline("text-classification", model=str(out))
    reference = classifier(["great film", "boring plot"])
    result = cli(["classify", "-m", str(out), "great film", "boring plot"])
    ours = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["label"] for r in ours] == [r["label"] for r in reference]
    assert {r["label"] for r in ours} <= {"neg", "pos"}
    # training switched to eager attention on this CPU; the saved model loads with the default
    assert classifier.model.config._attn_implementation == "sdpa"


def test_saved_config_reproduces_the_run(cli, finished_run, tmp_path):
    out, summary = finished_run
    saved = yaml.safe_load((out / "bgcli_config.yaml").read_text())
    validate_keys({k: v for k, v in saved.items()}, FinetuneConfig, "bgcli_config.yaml")
    again = cli(
        [
            "finetune",
            "--recipe",
            str(out / "bgcli_config.yaml"),
            "--output",
            str(tmp_path / "again"),
            "--quiet",
            "--format",
            "jsonl",
        ]
    )
    assert again.code == 0, again.stderr
    repeat = json.loads(again.stdout)
    for key in ("eval_accuracy", "test_accuracy", "test_loss"):
        assert repeat[key] == pytest.approx(summary[key], abs=1e-4)


def test_a_finished_run_is_not_overwritten(cli, finished_run, tiny_bert_dir, reviews):
    out, _ = finished_run
    before = (out / "metrics.json").read_text()
    result = finetune(cli, tiny_bert_dir, out, "--train-data", str(reviews["train"]))
    assert result.code == 2 and "--overwrite" in result.stderr
    assert (out / "metrics.json").read_text() == before


def test_eval_label_unseen_in_training_is_a_clear_error(cli, tiny_bert_dir, reviews, tmp_path):
    result = finetune(
        cli,
        tiny_bert_dir,
        tmp_path / "x",
        "--train-data",
        str(reviews["train"]),
        "--eval-data",
        str(reviews["unseen"]),
    )
    assert result.code == 2 and "label(s) meh not seen in training (neg, pos)" in result.stderr


def _labelled(labels, names=None):
    from datasets import ClassLabel, Dataset, Features, Value

    plain = Value("int64" if isinstance(labels[0], int) else "string")
    label_type = ClassLabel(names=names) if names else plain
    return Dataset.from_dict(
        {"text": [f"t{i}" for i in range(len(labels))], "label": labels},
        features=Features({"text": Value("string"), "label": label_type}),
    )


def _encoded(train, split, label_names=None):
    from bertgpt_cli.training.tasks.classification import encode_labels, label_set

    labels = label_set(train, "label", label_names)
    return labels, encode_labels(split, labels, "label", "test")["labels"]


def test_labels_match_by_name_across_class_label_and_text_splits():
    # Train on a file with text labels, test on built-in-style ClassLabel rows (and back).
    labels, ids = _encoded(_labelled(["pos", "neg", "pos"]), _labelled([1, 0, 0], names=["neg", "pos"]))
    assert labels.names == ["neg", "pos"] and ids == [1, 0, 0]
    labels, ids = _encoded(_labelled([0, 1], names=["neg", "pos"]), _labelled(["pos", "neg", "neg"]))
    assert labels.names == ["neg", "pos"] and ids == [1, 0, 0]
    # A ClassLabel in another order is mapped by name, not by position.
    _, ids = _encoded(_labelled([0, 1], names=["neg", "pos"]), _labelled([0, 0, 1], names=["pos", "neg"]))
    assert ids == [1, 1, 0]
    # Ids given as plain integers (or their text) for a ClassLabel training column.
    _, ids = _encoded(_labelled([0, 1], names=["neg", "pos"]), _labelled(["1", "0"]))
    assert ids == [1, 0]


def test_integer_labels_match_their_text_form():
    labels, ids = _encoded(_labelled([2, 10, 2]), _labelled(["10", "2"]))
    assert labels.names == ["2", "10"] and ids == [1, 0]  # sorted as numbers; "10" read as 10


def test_rows_without_a_label_and_bad_label_names_are_clear_errors():
    from bertgpt_cli.errors import UsageError

    with pytest.raises(UsageError, match=r"test data has rows without a label \(-1\)"):
        _encoded(_labelled([0, 1], names=["neg", "pos"]), _labelled([0, -1], names=["neg", "pos"]))
    two_labels = _labelled([0, 1], names=["neg", "pos"])
    with pytest.raises(UsageError, match="--label-names has 3 names but the training data has 2 labels"):
        _encoded(two_labels, _labelled([0], names=["neg", "pos"]), ["a", "b", "c"])


def test_unknown_column_names_the_columns(cli, tiny_bert_dir, reviews, tmp_path):
    result = finetune(
        cli, tiny_bert_dir, tmp_path / "x", "--train-data", str(reviews["train"]), "--text-column", "review"
    )
    assert result.code == 2 and "it has: text, label" in result.stderr
    assert not (tmp_path / "x").exists()  # the failed run left no empty run dir


def test_a_failed_start_leaves_no_empty_run_dir_but_keeps_an_existing_one(
    cli, tiny_bert_dir, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # default output: runs/classification-<timestamp>
    result = cli(["finetune", "-m", str(tiny_bert_dir), "--train-data", "typo.csv", "--quiet"])
    assert result.code == 2 and "typo.csv" in result.stderr
    assert list((tmp_path / "runs").iterdir()) == []
    mine = tmp_path / "mine"
    mine.mkdir()
    result = cli(["finetune", "-m", str(tiny_bert_dir), "--train-data", "typo.csv", "--output", str(mine)])
    assert result.code == 2 and mine.is_dir()


def test_several_processes_without_a_shared_output_dir_are_refused(cli, tiny_bert_dir, reviews, monkeypatch):
    # as under `accelerate launch`: every process would otherwise pick its own timestamped dir
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = cli(["finetune", "-m", str(tiny_bert_dir), "--train-data", str(reviews["train"])])
    assert result.code == 2 and "pass --output DIR" in result.stderr


def test_integer_labels_take_label_names(cli, tiny_bert_dir, reviews, tmp_path):
    out = tmp_path / "ints"
    result = finetune(
        cli,
        tiny_bert_dir,
        out,
        "--train-data",
        str(reviews["ints"]),
        "--label-names",
        "negative,positive",
        "--max-steps",
        "2",
    )
    assert result.code == 0, result.stderr
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}


def test_recipe_key_typo_is_rejected_with_the_closest_key(cli, tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("train_data: x.csv\nepoch: 3\n")
    result = cli(["finetune", "--recipe", str(recipe)])
    assert result.code == 2
    assert "unknown key 'epoch'" in result.stderr and "did you mean 'epochs'?" in result.stderr


def test_flags_override_the_recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train_data: a.csv\nlr: 0.1\nepochs: 7\n")
    config = FinetuneConfig.from_command_line(
        {**{f: getattr(FinetuneConfig(), f) for f in ("lr", "epochs")}, "recipe": str(recipe), "lr": 0.5},
        explicit={"lr"},
    )
    assert (config.lr, config.epochs, config.train_data) == (0.5, 7, "a.csv")


@pytest.mark.parametrize("path", sorted(PACKAGE_RECIPES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_recipe_is_valid(path):
    from bertgpt_cli.training.pretrain import PretrainConfig
    from bertgpt_cli.training.recipes import recipe_command

    data = read_recipe(path)
    command = recipe_command(data)
    config_cls = PretrainConfig if command == "pretrain" else FinetuneConfig
    validate_keys(data, config_cls, str(path))
    config = config_cls(**data)
    assert config.train_data
    lines = path.read_text().splitlines()
    header = lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))]
    assert any(f"bgcli {command} --recipe" in line for line in header)
    assert any(line.startswith("# Measured:") for line in header)
    assert find_recipe(path.stem) == path


def kill_after_first_checkpoint_and_resume(tmp_path: Path, common: list[str], first_checkpoint: int):
    """Run `common` uninterrupted; run it again, SIGKILL it once checkpoint `first_checkpoint`
    is complete, resume it; return (resumed metrics, uninterrupted metrics)."""
    import signal
    import subprocess
    import time

    from .conftest import BGCLI, ROOT

    common = [*common, "--save-total-limit", "3", "--quiet", "--format", "jsonl"]
    full = subprocess.run(
        BGCLI + common + ["--output", str(tmp_path / "full")], capture_output=True, text=True, cwd=ROOT
    )
    assert full.returncode == 0, full.stderr
    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        BGCLI + common + ["--output", str(killed_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 120
    while not (killed_dir / f"checkpoint-{first_checkpoint}" / "trainer_state.json").is_file():
        assert proc.poll() is None and time.monotonic() < deadline, (
            "the run ended before its first checkpoint"
        )
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed_dir / "metrics.json").exists()  # it really was cut short
    resumed = subprocess.run(
        BGCLI
        + [
            common[0],  # finetune or pretrain
            "--recipe",
            str(killed_dir / "bgcli_config.yaml"),
            "--output",
            str(killed_dir),
            "--resume",
            "auto",
            "--quiet",
            "--format",
            "jsonl",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert resumed.returncode == 0, resumed.stderr
    want = json.loads((tmp_path / "full" / "metrics.json").read_text())
    got = json.loads((killed_dir / "metrics.json").read_text())
    return got, want


def test_a_killed_run_resumes_to_the_same_final_metrics(tiny_bert_dir, reviews, tmp_path):
    """Kill a real run after its first checkpoint, resume it, compare with an uninterrupted run."""
    got, want = kill_after_first_checkpoint_and_resume(
        tmp_path,
        [
            "finetune",
            "-m",
            str(tiny_bert_dir),
            "--train-data",
            str(reviews["train"]),
            "--test-data",
            str(reviews["test"]),
            "--max-steps",
            "120",
            "--eval-every",
            "15",
            "--batch-size",
            "8",
            "--lr",
            "3e-3",
        ],
        first_checkpoint=15,
    )
    for split, key in (
        ("eval", "eval_loss"),
        ("eval", "eval_accuracy"),
        ("test", "test_loss"),
        ("test", "test_accuracy"),
    ):
        assert got[split][key] == pytest.approx(want[split][key], rel=1e-5, abs=1e-7), key
    # The whole run's mean train loss, although checkpoint rotation deleted the resumed-from one.
    assert got["train"]["train_loss"] == pytest.approx(want["train"]["train_loss"], rel=1e-3)


def test_resume_without_a_checkpoint_is_a_clear_error(cli, tiny_bert_dir, reviews, tmp_path):
    (tmp_path / "empty").mkdir()
    result = finetune(
        cli, tiny_bert_dir, tmp_path / "empty", "--train-data", str(reviews["train"]), "--resume", "auto"
    )
    assert result.code == 2 and "no checkpoint" in result.stderr


def test_recipes_list_show_cp(cli, tmp_path):
    listed = [json.loads(line) for line in cli(["recipes", "list"]).stdout.splitlines()]
    names = [r["name"] for r in listed]
    assert "rt-minilm" in names and "sst2-bert-base" in names
    rt = listed[names.index("rt-minilm")]
    assert rt["model"] == "minilm" and rt["measured"]
    shown = cli(["recipes", "show", "rt-minilm"])
    assert shown.stdout == (PACKAGE_RECIPES / "rt-minilm.yaml").read_text()
    copied = cli(["recipes", "cp", "rt-minilm", str(tmp_path)])
    assert copied.code == 0 and (tmp_path / "rt-minilm.yaml").read_text() == shown.stdout
    again = cli(["recipes", "cp", "rt-minilm", str(tmp_path)])
    assert again.code == 2 and "--overwrite" in again.stderr


def test_ctrl_c_saves_a_checkpoint_and_prints_the_resume_command(cli, tiny_bert_dir, reviews, tmp_path):
    import subprocess
    import time

    from .conftest import BGCLI, interrupt_and_wait, start_interruptible

    out = tmp_path / "interrupted"
    args = [
        "finetune",
        "-m",
        str(tiny_bert_dir),
        "--train-data",
        str(reviews["train"]),
        "--max-steps",
        "100000",
        "--eval-every",
        "100000",  # no scheduled checkpoint: any checkpoint is the Ctrl-C one
        "--batch-size",
        "8",
        "--output",
        str(out),
    ]
    proc = start_interruptible(BGCLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out / "bgcli_config.yaml").is_file():  # written just before the first step
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(3)  # let it train for a while
    stderr = interrupt_and_wait(proc).decode()
    assert proc.returncode == 130
    assert "Traceback" not in stderr
    command = f"bgcli finetune --recipe {out / 'bgcli_config.yaml'} --output {out} --resume auto"
    assert command in stderr
    step = int(re.search(r"interrupted at step (\d+); checkpoint saved", stderr).group(1))
    assert step > 0
    assert [p.name for p in out.glob("checkpoint-*")] == [f"checkpoint-{step}"]  # saved at that very step
    assert (out / f"checkpoint-{step}" / "trainer_state.json").is_file()
    # the interrupted run has no final model: inference commands say what to do instead
    result = cli(["classify", "-m", str(out), "great"])
    assert result.code == 2 and "unfinished bgcli training run" in result.stderr
    assert f"-m {out / f'checkpoint-{step}'}" in result.stderr and command in result.stderr
    # and that checkpoint is a model the inference commands load
    result = cli(["classify", "-m", str(out / f"checkpoint-{step}"), "great"])
    assert result.code == 0 and json.loads(result.stdout)["label"] in {"neg", "pos"}


def test_early_stopping_stops_without_asking_for_load_best(cli, tiny_bert_dir, reviews, tmp_path):
    out = tmp_path / "early"
    result = finetune(
        cli,
        tiny_bert_dir,
        out,
        "--train-data",
        str(reviews["train"]),
        "--lr",
        "0",
        "--max-steps",
        "1000",
        "--eval-every",
        "5",
        "--early-stopping",
        "1",
    )
    assert result.code == 0, result.stderr
    history = [json.loads(line) for line in (out / "log_history.jsonl").read_text().splitlines()]
    assert max(entry["step"] for entry in history) == 10  # best at 5, no gain at 10: stop


def test_early_stopping_without_eval_data_is_a_clear_error(cli, tiny_bert_dir, reviews, tmp_path):
    no_eval = ["--train-data", str(reviews["train"]), "--eval-split", "0", "--early-stopping", "2"]
    result = finetune(cli, tiny_bert_dir, tmp_path / "x", *no_eval)
    assert result.code == 2 and "--early-stopping watches eval data" in result.stderr


def test_class_weights_are_inverse_frequency(tiny_bert_dir):
    from datasets import Dataset
    from transformers import AutoTokenizer

    from bertgpt_cli.training.tasks import ClassificationTask, LabelSet

    task = ClassificationTask(FinetuneConfig(train_data="x"), AutoTokenizer.from_pretrained(tiny_bert_dir))
    task.labels = LabelSet(["a", "b"])
    weights = task.class_weights(Dataset.from_dict({"labels": [0, 0, 0, 1]}))
    assert weights == pytest.approx([4 / (2 * 3), 4 / (2 * 1)])


def test_cpu_training_with_attention_dropout_uses_eager_attention(tiny_bert_dir, tiny_llama_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from bertgpt_cli.training.engine import eager_attention_for_cpu_dropout

    def bert():
        model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
        assert model.config.attention_probs_dropout_prob > 0 and model.config._attn_implementation == "sdpa"
        return model

    model = bert()
    assert eager_attention_for_cpu_dropout(model, torch.device("cpu"))
    assert model.config._attn_implementation == "eager"
    layer = model.bert.encoder.layer[0].attention.self  # the layers follow the config
    assert layer.config._attn_implementation == "eager"
    # GPUs keep SDPA (fused dropout kernels there); so does a model without attention dropout
    model = bert()
    assert not eager_attention_for_cpu_dropout(model, torch.device("cuda"))
    assert model.config._attn_implementation == "sdpa"
    llama = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    assert llama.config.attention_dropout == 0.0
    assert not eager_attention_for_cpu_dropout(llama, torch.device("cpu"))
    assert llama.config._attn_implementation == "sdpa"


def test_the_ddp_wrapper_is_freed_before_the_group_is_torn_down():
    """Its reducer holds the gloo group: freed later, on one rank alone, the group's destructor
    hung (a 2-process test, rank 1 in ~ProcessGroupGloo) or aborted (CI)."""
    from types import SimpleNamespace

    from bertgpt_cli.training.engine import leave_process_group

    events = []
    model, wrapped = object(), object()
    trainer = SimpleNamespace(model=model, model_wrapped=wrapped)
    trainer.accelerator = SimpleNamespace(
        free_memory=lambda: events.append(("free_memory", trainer.model_wrapped is model))
    )
    state = SimpleNamespace(
        num_processes=2,
        wait_for_everyone=lambda: events.append(("wait", None)),
        destroy_process_group=lambda: events.append(("destroy", None)),
    )
    leave_process_group(SimpleNamespace(distributed_state=state), trainer)
    assert events == [("free_memory", True), ("wait", None), ("destroy", None)]
    one_process = SimpleNamespace(distributed_state=SimpleNamespace(num_processes=1))
    leave_process_group(one_process, SimpleNamespace(model_wrapped=wrapped))  # nothing to tear down


def test_two_processes_really_run_and_only_rank_0_writes(tiny_bert_dir, reviews, tmp_path):
    """--num-processes 2 relaunches under torchrun (gloo on CPU): world size 2, one run dir,
    and a loss on the same scale as one process (not multiplied by the world size)."""
    import subprocess

    from .conftest import BGCLI, ROOT

    common = [
        "finetune",
        "-m",
        str(tiny_bert_dir),
        "--train-data",
        str(reviews["train"]),
        "--max-steps",
        "6",
        "--batch-size",
        "4",
        "--lr",
        "0",
        "--eval-split",
        "0.25",
        "--quiet",
        "--format",
        "jsonl",
    ]
    two = subprocess.run(
        BGCLI + common + ["--num-processes", "2", "--output", str(tmp_path / "two")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr
    summaries = [json.loads(line) for line in two.stdout.splitlines()]
    assert len(summaries) == 1 and summaries[0]["world_size"] == 2  # rank 0 alone printed
    one = subprocess.run(
        BGCLI + common + ["--output", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    # lr 0: the model never changes, so both runs evaluate the same weights on the same data.
    assert summaries[0]["eval_loss"] == pytest.approx(json.loads(one.stdout)["eval_loss"], rel=1e-3)
    train_two = json.loads((tmp_path / "two" / "metrics.json").read_text())["train"]["train_loss"]
    train_one = json.loads((tmp_path / "one" / "metrics.json").read_text())["train"]["train_loss"]
    assert train_two == pytest.approx(train_one, rel=0.2)  # same scale, not doubled


RSS_AFTER_FREE = """
import sys
from bertgpt_cli.models.devices import reuse_freed_memory
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
before = rss_mb()
block = bytearray(64 * 2**20)  # zero-filled, so every page is touched
del block
print(round(rss_mb() - before))
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_training_keeps_freed_memory_for_reuse():
    """After reuse_freed_memory() (called by train) a freed 64 MB buffer stays in the process,
    ready for the next step; by default glibc unmaps it at once."""
    import subprocess

    def kept_mb(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", RSS_AFTER_FREE, mode], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return int(done.stdout)

    assert kept_mb("default") < 8
    assert kept_mb("reuse") >= 60


def test_model_card_names_the_eval_data_or_none():
    from types import SimpleNamespace

    from bertgpt_cli.training.finetune import FinetuneConfig
    from bertgpt_cli.training.run_report import model_card
    from bertgpt_cli.training.tasks.classification import ClassificationTask

    task = ClassificationTask.__new__(ClassificationTask)
    task.labels = SimpleNamespace(names=["neg", "pos"])
    run = {"wall_time_s": 1.0, "train_samples_per_second": 2.0, "precision": "fp32", "device": "cpu"}
    metrics = {"test": {"test_accuracy": 0.5}, "run": run | {"world_size": 1, "attention": "sdpa"}}

    def eval_line(**overrides):
        config = FinetuneConfig(train_data="train.csv", test_data="test.csv", **overrides)
        return next(line for line in model_card(config, task, metrics, []).splitlines() if "eval:" in line)

    assert "eval: `none`" in eval_line(eval_split=0.0)
    assert "eval: `10% of train`" in eval_line(eval_split=0.1)
    assert "eval: `dev.csv`" in eval_line(eval_data="dev.csv")


def test_every_file_of_a_run_and_its_export_follows_the_umask(cli, tiny_bert_dir, reviews, tmp_path):
    """The safetensors writer creates 0600 files; a colleague must be able to load the model."""
    import os
    import stat

    previous = os.umask(0o022)
    try:
        out = tmp_path / "run"
        result = finetune(cli, tiny_bert_dir, out, "--train-data", str(reviews["train"]))
        assert result.code == 0, result.stderr
        assert list(out.glob("checkpoint-*/model.safetensors"))  # checkpoints are walked too
        exported = cli(["export", "-m", str(out), "-o", str(tmp_path / "onnx"), "--quiet"])
        assert exported.code == 0, exported.stderr
    finally:
        os.umask(previous)
    wrong = []
    for folder in (out, tmp_path / "onnx"):
        for path in [folder, *folder.rglob("*")]:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode != (0o755 if path.is_dir() else 0o644):
                wrong.append(f"{path.relative_to(tmp_path)} {oct(mode)}")
    assert not wrong, wrong


def test_a_restart_into_a_killed_run_with_checkpoints_is_refused(cli, finished_run, tiny_bert_dir, reviews):
    """Without --resume the restart would delete the checkpoints: name --resume auto and --overwrite."""
    import shutil

    out, _ = finished_run
    killed = out.parent / "killed"
    shutil.copytree(out, killed)
    (killed / "metrics.json").unlink()  # as a killed run leaves it: checkpoints, no metrics.json
    result = finetune(cli, tiny_bert_dir, killed, "--train-data", str(reviews["train"]))
    assert result.code == 2 and "holds an unfinished run (checkpoint-" in result.stderr
    assert "--resume auto" in result.stderr and "--overwrite" in result.stderr
    assert list(killed.glob("checkpoint-*"))  # nothing was deleted


def test_training_batches_are_padded_to_few_shapes_without_changing_the_loss(tiny_classifier_dir):
    """Length-grouped batches of every length grew the process (a new oneDNN / allocator shape
    each time); rounding them to a multiple of 8 keeps few shapes, and padding is masked."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    from bertgpt_cli.training.engine import RoundedLengths, rounded_length

    assert [rounded_length(n) for n in (1, 8, 9, 128, 129, 250)] == [8, 8, 16, 128, 144, 256]
    tokenizer = AutoTokenizer.from_pretrained(tiny_classifier_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_classifier_dir).eval()
    features = [
        dict(tokenizer(t), labels=i % 2) for i, t in enumerate(["great film", "a dull and boring plot"])
    ]
    plain = DataCollatorWithPadding(tokenizer)(features)
    rounded = RoundedLengths(DataCollatorWithPadding(tokenizer), tokenizer)(features)
    assert (
        rounded["input_ids"].shape[1]
        == rounded_length(plain["input_ids"].shape[1])
        > plain["input_ids"].shape[1]
    )
    assert int(rounded["attention_mask"].sum()) == int(plain["attention_mask"].sum())
    with torch.no_grad():
        assert float(model(**rounded).loss) == pytest.approx(float(model(**plain).loss), abs=1e-5)
