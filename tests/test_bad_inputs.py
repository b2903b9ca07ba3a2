"""Bad input, bad flags, broken models and faults: each gets one line naming the fix, the
right exit code, and never a silent exit 0 with missing or wrong output.

Add a row to CASES for a new failure mode: (name, argv with {placeholders}, stdin, exit code,
a fragment of stderr, what stdout must hold)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

# fmt: off
# Records on stdout: None = don't care, [] = nothing, else a list of dicts each record must contain.
CASES = [
    ("classify batch size 0", ["classify", "-m", "{cls}", "--batch-size", "0", "a"], None, 2, "--batch-size must be >= 1", []),
    ("fill-mask batch size -3", ["fill-mask", "-m", "{mlm}", "--batch-size", "-3", "a [MASK]"], None, 2, "--batch-size must be >= 1", []),
    ("generate batch size 0", ["generate", "-m", "{gpt2}", "--batch-size", "0", "a"], None, 2, "--batch-size must be >= 1", []),
    ("generate 0 sequences", ["generate", "-m", "{gpt2}", "--num-return-sequences", "0", "a"], None, 2, "--num-return-sequences must be >= 1", []),
    ("temperature 0", ["generate", "-m", "{gpt2}", "--sample", "--temperature", "0", "a"], None, 2, "--temperature must be > 0", []),
    ("negative temperature", ["generate", "-m", "{gpt2}", "--sample", "--temperature", "-1", "a"], None, 2, "--temperature must be > 0", []),
    ("top-p above 1", ["generate", "-m", "{gpt2}", "--top-p", "1.5", "a"], None, 2, "--top-p must be > 0 and <= 1", []),
    ("top-p 0", ["generate", "-m", "{gpt2}", "--top-p", "0", "a"], None, 2, "--top-p must be > 0", []),
    ("epochs -1", ["finetune", "-m", "{mlm}", "--train-data", "{csv}", "--epochs", "-1", "-o", "{out}"], None, 2, "--epochs must be > 0", None),
    ("max-steps 0", ["finetune", "-m", "{mlm}", "--train-data", "{csv}", "--max-steps", "0", "-o", "{out}"], None, 2, "--max-steps 0 would train nothing", None),
    ("finetune batch size 0", ["finetune", "-m", "{mlm}", "--train-data", "{csv}", "--batch-size", "0", "-o", "{out}"], None, 2, "--batch-size must be >= 1", None),
    ("recipe epochs: three", ["finetune", "--recipe", "{bad_recipe}", "-o", "{out}"], None, 2, "'epochs' in recipe", None),
    ("no tokenizer files", ["classify", "-m", "{no_tokenizer}", "dull and lifeless"], None, 2, "has no tokenizer files", []),
    ("tokenizer not the model's own", ["classify", "-m", "{wrong_tokenizer}", "dull"], None, 2, "not the model's own tokenizer", []),
    ("sentence-pair model given one text", ["classify", "-m", "{pair_model}", "a"], None, 0, "fine-tuned on sentence pairs but line 1", [{"label": None}]),
    ("embed tokens into a file", ["embed", "-m", "{mlm}", "--pooling", "tokens", "-o", "x.npy", "a"], None, 2, "--pooling tokens gives a vector per token", []),
    ("embed to an unknown file type", ["embed", "-m", "{mlm}", "-o", "x.txt", "a"], None, 2, "must end in .npy, .safetensors, .parquet", []),
    ("search corpus missing", ["search", "-m", "{mlm}", "--corpus", "no-such.txt", "q"], None, 2, "--corpus file 'no-such.txt' not found", []),
    ("search with token pooling", ["search", "-m", "{mlm}", "--corpus", "{csv}", "--pooling", "tokens", "q"], None, 2, "choose a sentence --pooling", []),
    ("search top-k 0", ["search", "-m", "{mlm}", "--corpus", "{csv}", "-k", "0", "q"], None, 2, "--top-k must be >= 1", []),
    ("malformed first JSONL line", ["classify", "-m", "{cls}"], '{"id": 1, "text": "a"\n{"id": 2, "text": "good"}\n', 1, "line 1: not valid JSON", [{"line": 1}, {"id": 2, "label": None}]),
    ("corrupt safetensors", ["classify", "-m", "{corrupt}", "a"], None, 1, "truncated or corrupt", []),
    ("incomplete checkpoint", ["classify", "-m", "{incomplete}", "a"], None, 1, "is incomplete", []),
    ("relative model path that does not exist", ["classify", "-m", "{rel_missing}", "a"], None, 2, "not found", []),
    ("fill-mask without a mask", ["fill-mask", "-m", "{mlm}", "no mask here"], None, 1, "put [MASK] where", [{"line": 1}]),
    ("top-k beyond the vocabulary", ["fill-mask", "-m", "{mlm}", "--top-k", "100000", "the [MASK] ."], None, 0, "more than the vocabulary holds", None),
    ("header-only CSV", ["finetune", "-m", "{mlm}", "--train-data", "{header_only}", "-o", "{out}"], None, 2, "has no rows", None),
    ("0-byte CSV", ["finetune", "-m", "{mlm}", "--train-data", "{zero_bytes}", "-o", "{out}"], None, 2, "is empty (0 bytes)", None),
    ("one-class labels", ["finetune", "-m", "{mlm}", "--train-data", "{one_class}", "-o", "{out}"], None, 2, "label column 'label' of", None),
    ("ner min-score above 1", ["ner", "-m", "{ner}", "--min-score", "1.5", "paris"], None, 2, "--min-score must be >= 0 and <= 1", []),
    ("ner with a sentence classifier", ["ner", "-m", "{cls}", "paris"], None, 2, "no trained token-classification head", []),
    ("ner bad JSONL record", ["ner", "-m", "{ner}"], '{"text": "paris"}\n{"id": 2}\n', 1, "line 2: no 'text' field", [{"entities": None}, {"line": 2}]),
    ("ner CoNLL line of one column", ["finetune", "--task", "ner", "-m", "{mlm}", "--train-data", "{conll_one_column}", "-o", "{out}"], None, 2, "line 2 of", None),
    ("ner tag column past the end", ["finetune", "--task", "ner", "-m", "{mlm}", "--train-data", "{conll}", "--tag-column", "9", "-o", "{out}"], None, 2, "--tag-column 9 but line 1", None),
    ("ner tokens and tags differ", ["finetune", "--task", "ner", "-m", "{mlm}", "--train-data", "{ner_mismatch}", "-o", "{out}"], None, 2, "record 1 has 2 tokens but 1 tags", None),
    ("ner data without NER columns", ["finetune", "--task", "ner", "-m", "{mlm}", "--train-data", "{csv}", "-o", "{out}"], None, 2, "NER data needs token lists", None),
    ("ner data with only O", ["finetune", "--task", "ner", "-m", "{mlm}", "--train-data", "{conll_only_o}", "-o", "{out}"], None, 2, "has no entity tags", None),
    ("qa question without a context", ["qa", "-m", "{qa}", "--question", "who?"], None, 2, "--question needs --context", []),
    ("qa context file missing", ["qa", "-m", "{qa}", "--question", "who?", "--context", "no-such.txt"], None, 2, "--context file 'no-such.txt' not found", []),
    ("qa top-k 0", ["qa", "-m", "{qa}", "--top-k", "0", "--question", "who?", "--context", "-"], None, 2, "--top-k must be >= 1", []),
    ("qa with a NER model", ["qa", "-m", "{ner}", "--question", "who?", "--context", "{csv}"], None, 2, "no trained question-answering head", []),
    ("squad unknown split", ["finetune", "--task", "qa", "-m", "{mlm}", "--train-data", "squad@dev", "-o", "{out}"], None, 2, "unknown split '@dev' for squad", None),
    ("embedding data without a positive column", ["finetune", "--task", "embedding", "-m", "{mlm}", "--train-data", "{csv}", "-o", "{out}"], None, 2, "column 'anchor' not in the train data", None),
    ("embedding flag for another task", ["finetune", "-m", "{mlm}", "--train-data", "{csv}", "--loss", "cosine", "-o", "{out}"], None, 2, "--loss applies to --task embedding", None),
    ("embedding scale 0", ["finetune", "--task", "embedding", "-m", "{mlm}", "--train-data", "{csv}", "--scale", "0", "-o", "{out}"], None, 2, "--scale must be > 0", None),
    ("qa flag for another task", ["finetune", "-m", "{mlm}", "--train-data", "{csv}", "--doc-stride", "64", "-o", "{out}"], None, 2, "--doc-stride applies to --task qa", None),
    ("embed over an existing file", ["embed", "-m", "{mlm}", "-o", "{existing_npy}", "a"], None, 2, "already exist(s); pass --overwrite", []),
    ("embed over someone's rows sidecar", ["embed", "-m", "{mlm}", "-o", "{sidecar_only}", "a"], None, 2, "mine.rows.jsonl already exist(s)", []),
    ("data check with an unknown label column", ["data", "check", "--train-data", "{csv}", "--label-column", "nope"], None, 2, "no column 'nope'", None),
    ("export a classifier as qa", ["export", "-m", "{cls}", "--task", "qa", "-o", "{out}"], None, 2, "no trained question-answering head", []),
    ("UTF-16 input to embed", ["embed", "-m", "{mlm}", "-i", "{utf16}"], None, 2, "the input is UTF-16", []),
    ("UTF-16 search corpus", ["search", "-m", "{mlm}", "--corpus", "{utf16}", "q"], None, 2, "the input is UTF-16", []),
    ("a line with NUL bytes", ["embed", "-m", "{mlm}"], "good text\nbad\x00text\n", 1, "line 2: holds NUL bytes", [{"embedding": None}, {"line": 2}]),
    ("Latin-1 CSV to data check", ["data", "check", "--train-data", "{latin1}"], None, 2, "is not UTF-8 (byte 0xe9 on line 2)", None),
    ("Latin-1 CSV to eval", ["eval", "-m", "{cls}", "--data", "{latin1}"], None, 2, "is not UTF-8 (byte 0xe9 on line 2)", []),
    ("a directory as training data", ["finetune", "-m", "{mlm}", "--train-data", "{folder}", "-o", "{out}"], None, 2, "is a directory; name a file in it", None),
    ("conll2003 unknown split", ["finetune", "--task", "ner", "-m", "{mlm}", "--train-data", "conll2003@dev", "-o", "{out}"], None, 2, "unknown split '@dev' for conll2003", None),
]
# fmt: on


@pytest.fixture(scope="module")
def places(
    tmp_path_factory, tiny_classifier_dir, tiny_bert_dir, tiny_gpt2_dir, tiny_ner_dir, tiny_qa_dir
) -> dict[str, str]:
    root = tmp_path_factory.mktemp("bad-inputs")
    no_tokenizer = _copy_model(tiny_classifier_dir, root / "no-tokenizer", keep_tokenizer=False)
    wrong_tokenizer = _copy_model(tiny_classifier_dir, root / "wrong-tokenizer", keep_tokenizer=False)
    _special_tokens_only_tokenizer(wrong_tokenizer)
    pair_model = _copy_model(tiny_classifier_dir, root / "pair-model")
    config = json.loads((pair_model / "config.json").read_text())
    (pair_model / "config.json").write_text(json.dumps({**config, "bgcli_text_pair_column": "hypothesis"}))
    corrupt = _copy_model(tiny_classifier_dir, root / "corrupt")
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    run = root / "run"
    incomplete = _copy_model(tiny_classifier_dir, run / "checkpoint-20")
    (incomplete / "model.safetensors").unlink()
    (run / "bgcli_config.yaml").write_text("task: classification\n")
    csv = root / "train.csv"
    csv.write_text("text,label\n" + "".join(f"text {i},{i % 2}\n" for i in range(8)))
    (root / "header.csv").write_text("text,label\n")
    (root / "zero.csv").write_text("")
    (root / "one.csv").write_text("text,label\n" + "".join(f"text {i},good\n" for i in range(8)))
    (root / "train.conll").write_text("paris B-LOC\nis O\n\nrome B-LOC\n")
    (root / "one-column.conll").write_text("paris B-LOC\nis\n")
    (root / "only-o.conll").write_text("paris O\nis O\n")
    (root / "mismatch.jsonl").write_text(
        json.dumps({"tokens": ["paris", "is"], "ner_tags": ["B-LOC"]}) + "\n"
    )
    (root / "existing.npy").write_bytes(b"someone's vectors")
    (root / "utf16.txt").write_text("first line\nsecond line\n", encoding="utf-16")
    (root / "latin1.csv").write_bytes("text,label\ncaf\u00e9 cr\u00e8me,pos\nplain,neg\n".encode("latin-1"))
    (root / "sidecar").mkdir()
    (root / "sidecar" / "mine.rows.jsonl").write_text('{"text": "theirs"}\n')
    recipe = root / "bad.yaml"
    recipe.write_text(f"model: {tiny_bert_dir}\ntrain_data: {csv}\nepochs: three\n")
    return {
        "cls": str(tiny_classifier_dir),
        "mlm": str(tiny_bert_dir),
        "gpt2": str(tiny_gpt2_dir),
        "csv": str(csv),
        "bad_recipe": str(recipe),
        "no_tokenizer": str(no_tokenizer),
        "wrong_tokenizer": str(wrong_tokenizer),
        "pair_model": str(pair_model),
        "corrupt": str(corrupt),
        "incomplete": str(incomplete),
        "header_only": str(root / "header.csv"),
        "zero_bytes": str(root / "zero.csv"),
        "one_class": str(root / "one.csv"),
        "ner": str(tiny_ner_dir),
        "qa": str(tiny_qa_dir),
        "conll": str(root / "train.conll"),
        "conll_one_column": str(root / "one-column.conll"),
        "conll_only_o": str(root / "only-o.conll"),
        "ner_mismatch": str(root / "mismatch.jsonl"),
        "existing_npy": str(root / "existing.npy"),
        "utf16": str(root / "utf16.txt"),
        "latin1": str(root / "latin1.csv"),
        "folder": str(root / "sidecar"),
        "sidecar_only": str(root / "sidecar" / "mine.npy"),
    }


def _copy_model(source: Path, target: Path, keep_tokenizer: bool = True) -> Path:
    target.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(source / name, target / name)
    if keep_tokenizer:
        for item in source.iterdir():
            if "token" in item.name or item.name in ("vocab.txt", "special_tokens_map.json"):
                shutil.copy(item, target / item.name)
    return target


def _special_tokens_only_tokenizer(folder: Path) -> None:
    from transformers import BertTokenizerFast

    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, cli, places, tmp_path, monkeypatch):
    name, argv, stdin, code, message, records = case
    values = {**places, "out": str(tmp_path / "run"), "rel_missing": "runs/does-not-exist"}
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    result = cli([arg.format(**values) for arg in argv], input=stdin)
    assert result.code == code, (name, result.stderr)
    assert message in result.stderr, (name, result.stderr)
    assert "Traceback" not in result.stderr
    if code == 2:
        assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1
    if records is not None:
        lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
        assert len(lines) == len(records), (name, result.stdout)
        for line, want in zip(lines, records, strict=True):
            for key, value in want.items():
                assert key in line and (value is None or line[key] == value), (name, line)
    if argv[0] == "finetune" and code:
        assert not (tmp_path / "run").exists()  # refused before anything was written


def test_mask_hint_does_not_repeat_itself(cli, places):
    result = cli(["fill-mask", "-m", places["mlm"], "no mask"])
    assert "(or [MASK])" not in result.stderr


# Never touch what bgcli did not write ---------------------------------------------------------


def test_finetune_refuses_a_folder_of_other_files(cli, places, tmp_path):
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "README.md").write_text("my notes")
    (mine / "config.json").write_text("{}")
    for extra in ([], ["--overwrite"]):
        result = cli(
            ["finetune", "-m", places["mlm"], "--train-data", places["csv"], "-o", str(mine), *extra]
        )
        assert result.code == 2 and "holds files bgcli did not write" in result.stderr
    assert (mine / "README.md").read_text() == "my notes"
    assert sorted(p.name for p in mine.iterdir()) == ["README.md", "config.json"]


def test_output_outside_the_working_dir_warns(places, tmp_path, monkeypatch):
    from bertgpt_cli.training.finetune import FinetuneConfig, prepare_run_dir

    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    config = FinetuneConfig(train_data=places["csv"], output=str(tmp_path / "elsewhere"))
    seen = []
    monkeypatch.setattr("bertgpt_cli.training.finetune.warn", lambda text: seen.append(text))
    prepare_run_dir(config)
    assert any("outside the current directory" in text for text in seen)


def test_a_second_run_into_a_locked_run_dir_is_refused(tmp_path):
    from bertgpt_cli.errors import UsageError
    from bertgpt_cli.io.run_dirs import LOCK_FILE, run_dir_lock

    with run_dir_lock(tmp_path):
        # flock belongs to an open file: a second open, even in this process, must wait.
        with pytest.raises(UsageError, match=f"pid {os.getpid()}"):
            with run_dir_lock(tmp_path):
                pass
    (tmp_path / LOCK_FILE).write_text("999999")  # a killed run's stale lock file
    with run_dir_lock(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text() == str(os.getpid())


def test_a_failed_final_save_leaves_no_temp_files(tmp_path):
    from bertgpt_cli.io.run_dirs import FINAL_TEMP, run_dir_lock

    (tmp_path / FINAL_TEMP).mkdir()
    (tmp_path / FINAL_TEMP / "model.safetensors").write_bytes(b"0" * 1000)
    with run_dir_lock(tmp_path):  # a run taking over the dir clears what a killed save left
        assert not (tmp_path / FINAL_TEMP).exists()


def test_written_files_follow_the_umask(tmp_path):
    from bertgpt_cli.io.atomic import save_dir_atomically, write_text_atomically

    old = os.umask(0o022)
    try:
        write_text_atomically(tmp_path / "metrics.json", "{}")
        folder = save_dir_atomically(tmp_path / "model", lambda d: (d / "a").write_text("x"))
    finally:
        os.umask(old)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o644
    assert folder.stat().st_mode & 0o777 == 0o755


def test_disk_full_is_one_line_with_the_resume_hint_only_for_a_complete_checkpoint(tmp_path):
    import errno

    from bertgpt_cli.errors import BgcliError
    from bertgpt_cli.training.finetune import disk_full_is_one_line

    def fail():
        with disk_full_is_one_line(tmp_path):
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "model.safetensors"))

    with pytest.raises(BgcliError) as caught:
        fail()
    assert "no space left on device writing" in str(caught.value) and "resume" not in str(caught.value)
    (tmp_path / "checkpoint-10").mkdir()
    (tmp_path / "checkpoint-10" / "trainer_state.json").write_text("{}")
    with pytest.raises(BgcliError, match="resume from .*checkpoint-10"):
        fail()


def test_empty_training_texts_are_skipped_with_their_rows_named(monkeypatch):
    import datasets

    from bertgpt_cli.training.tasks.classification import without_empty_texts

    seen = []
    monkeypatch.setattr("bertgpt_cli.training.tasks.classification.warn", seen.append)
    data = datasets.Dataset.from_dict({"text": ["good", "  ", None, "bad"], "label": [1, 0, 0, 0]})
    kept = without_empty_texts(data, ["text"], "train.csv")
    assert kept["text"] == ["good", "bad"]
    assert seen and "train.csv" in seen[0] and "2 row(s)" in seen[0] and "rows 2, 3" in seen[0]


# Streams and files ----------------------------------------------------------------------------


def _bgcli_in_bash(script: str, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    command = " ".join([sys.executable, "-m", "bertgpt_cli"])
    return subprocess.run(
        ["bash", "-c", script.replace("BGCLI", command)], capture_output=True, text=True, env=environment
    )


def test_stdin_closed_is_one_line(places):
    result = _bgcli_in_bash(f"BGCLI classify -m {places['cls']} <&-")
    assert result.returncode == 2 and "stdin is closed" in result.stderr and "Traceback" not in result.stderr


def test_input_from_process_substitution_and_named_pipe(places, tmp_path):
    result = _bgcli_in_bash(f"BGCLI classify -m {places['cls']} -i <(printf 'good\\nbad\\n')")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2
    fifo = tmp_path / "texts.fifo"
    os.mkfifo(fifo)
    result = _bgcli_in_bash(f"(printf 'good\\n' > {fifo} &) ; BGCLI classify -m {places['cls']} -i {fifo}")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1


def test_text_format_keeps_one_record_per_line(capsys):
    from bertgpt_cli.io.output import RecordWriter

    writer = RecordWriter("text", text_key="completion")
    writer.write({"completion": "line one\nline two \\ end"})
    writer.write({"completion": "second"})
    writer.close()
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["line one\\nline two \\\\ end", "second"]


def test_recipe_values_are_typed_before_loading(tmp_path):
    from bertgpt_cli.errors import UsageError
    from bertgpt_cli.training.finetune import FinetuneConfig
    from bertgpt_cli.training.recipes import merge

    good = tmp_path / "good.yaml"
    good.write_text("epochs: 2\nlr: 1e-4\nmax_steps: 10.0\neval_every: 50\n")
    config = merge(FinetuneConfig, {}, set(), str(good))
    assert (config.epochs, config.lr, config.max_steps, config.eval_every) == (2.0, 1e-4, 10, "50")
    for bad, fragment in (("lr: -1", "'lr'"), ("batch_size: 2.5", "whole number"), ("task: ner2", "one of")):
        path = tmp_path / "bad.yaml"
        path.write_text(bad + "\n")
        with pytest.raises(UsageError, match=fragment):
            merge(FinetuneConfig, {}, set(), str(path))
