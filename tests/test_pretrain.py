"""bgcli tokenizer train and bgcli pretrain: tokenizers AutoTokenizer loads, NSP pairs built as
the BERT paper says, BERT (mlm+nsp) and GPT-2 (clm) runs from random weights that fill-mask,
generate, the pipelines and finetune take, resume, recipes, MFU in the report."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from .conftest import CORPUS

# Documents of several sentences (a review each), built from the shared corpus.
SENTENCES = [f"{line.capitalize()} number {i}." for i, line in enumerate(CORPUS * 8)]
DOCUMENTS = [" ".join(SENTENCES[i : i + 4]) for i in range(0, len(SENTENCES), 4)]


@pytest.fixture(scope="module")
def documents_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("docs") / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCUMENTS))
    return path


def tokenizer_train(cli, kind: str, data: Path, out: Path, *extra: str):
    return cli(["tokenizer", "train", "--type", kind, "--vocab-size", "300", "--train-data", str(data),
                "-o", str(out), "-f", "jsonl", *extra])  # fmt: skip


# --- tokenizer train ---------------------------------------------------------------------------


def test_wordpiece_tokenizer_loads_with_berts_special_tokens_and_splits_cjk(cli, tmp_path):
    from transformers import AutoTokenizer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join([*SENTENCES, "我们 喜欢 电影", "Ünïcode Accents here."] * 3) + "\n")
    result = tokenizer_train(cli, "wordpiece", corpus, tmp_path / "wp")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "wp")
    assert tokenizer.is_fast and tokenizer.model_max_length == 512
    assert [tokenizer.pad_token, tokenizer.unk_token, tokenizer.cls_token, tokenizer.sep_token,
            tokenizer.mask_token] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # fmt: skip
    assert [tokenizer.convert_ids_to_tokens(i) for i in range(5)] == [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
    ]
    assert tokenizer.tokenize("我们喜欢") == ["我", "们", "喜", "欢"]  # one token per CJK character
    assert tokenizer.tokenize("THE MOVIE") == ["the", "movie"]  # lowercased
    pair = tokenizer("the movie", "the cat")
    assert pair["input_ids"][0] == tokenizer.cls_token_id and pair["token_type_ids"][-1] == 1
    assert report["vocab_size"] == len(tokenizer) and report["type"] == "wordpiece"
    assert report["held_out_records"] > 0 and report["tokens_per_word"] >= 1.0
    assert report["unknown_token_rate"] is not None and len(report["longest_tokens"]) == 10
    assert json.loads((tmp_path / "wp" / "tokenizer_report.json").read_text()) == {
        k: v for k, v in report.items() if k != "output"
    }


def test_unknown_rate_and_tokens_per_word_count_held_out_records(tmp_path):
    from bertgpt_cli.training.tokenizer_training import held_out_scores

    from .conftest import _wordpiece_tokenizer

    tokenizer = _wordpiece_tokenizer()
    texts = ["the movie qqq", "zzz the cat"]
    scores = held_out_scores(tokenizer, texts, counts_unknown=True)
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    flat = [i for row in ids for i in row]
    assert scores["unknown_token_rate"] == pytest.approx(
        flat.count(tokenizer.unk_token_id) / len(flat), abs=1e-6
    )
    assert scores["tokens_per_word"] == pytest.approx(len(flat) / 6, abs=1e-4)


def test_bpe_tokenizer_is_byte_level_gpt2_style(cli, tmp_path):
    from transformers import AutoTokenizer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n")
    result = tokenizer_train(cli, "bpe", corpus, tmp_path / "bpe")
    assert result.code == 0, result.stderr
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "bpe")
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.model_max_length == 1024
    text = "Un film très émouvant — 5/5 ✓"  # unseen characters: byte-level, never unknown
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert json.loads(result.stdout)["unknown_token_rate"] == 0.0


def test_tokenizer_train_refuses_foreign_folders_and_asks_before_replacing(cli, documents_file, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    refused = tokenizer_train(cli, "bpe", documents_file, foreign)
    assert refused.code == 2 and "did not write" in refused.stderr
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    assert tokenizer_train(cli, "bpe", documents_file, tmp_path / "t").code == 0
    again = tokenizer_train(cli, "bpe", documents_file, tmp_path / "t")
    assert again.code == 2 and "--overwrite" in again.stderr
    assert tokenizer_train(cli, "wordpiece", documents_file, tmp_path / "t", "--overwrite").code == 0
    assert json.loads((tmp_path / "t" / "tokenizer_report.json").read_text())["type"] == "wordpiece"


# --- next-sentence pairs ------------------------------------------------------------------------


def sentence_documents(count: int = 40) -> list[list[list[int]]]:
    """Documents whose tokens are (document, position) codes: contiguity is checkable."""
    rng = random.Random(0)
    documents = []
    for d in range(count):
        ids, sentences = iter(range(d * 1000, d * 1000 + 1000)), []
        for _ in range(rng.randint(1, 6)):
            sentences.append([next(ids) for _ in range(rng.randint(3, 12))])
        documents.append(sentences)
    return documents


def test_nsp_pairs_follow_the_bert_recipe():
    from bertgpt_cli.training.tasks.next_sentence import document_pairs

    documents = sentence_documents()
    pairs = list(document_pairs(documents, 29, random.Random(1)))
    assert pairs == list(document_pairs(documents, 29, random.Random(1)))  # seeded
    not_next = [p for p in pairs if p[2]]
    assert 0.35 < len(not_next) / len(pairs) < 0.65  # 50/50
    for a, b, is_random in pairs:
        assert a and b and len(a) + len(b) <= 29
        assert all(y == x + 1 for x, y in zip(a, a[1:], strict=False))  # A: one run of one document
        same_document = a[0] // 1000 == b[0] // 1000
        if is_random:
            assert not same_document
        else:  # IsNext: B continues A (possibly trimmed at the seam by truncation)
            assert same_document and b[0] > a[-1]


def test_nsp_examples_have_segments_special_tokens_and_labels(tiny_bert_dir):
    from bertgpt_cli.training.tasks.next_sentence import MaskedLMWithNspTask

    from .test_finetune_lm import lm_config, tokenizer_of

    tokenizer = tokenizer_of(tiny_bert_dir)
    task = MaskedLMWithNspTask(lm_config(task="mlm+nsp", block_size=32, max_length=32), tokenizer)
    import datasets

    docs = task._tokenize(datasets.Dataset.from_dict({"text": DOCUMENTS}))
    pairs = task.finalize(docs, "train")
    for row in pairs:
        ids, types = row["input_ids"], row["token_type_ids"]
        assert len(ids) <= 32 and ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        first_sep = ids.index(tokenizer.sep_token_id)
        assert types == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
        assert row["special_tokens_mask"] == [
            int(i in (tokenizer.cls_token_id, tokenizer.sep_token_id)) for i in ids
        ]
    assert set(pairs["next_sentence_label"]) == {0, 1}
    held_out = task.finalize(docs, "eval")  # masked once, segments and labels kept
    assert held_out["token_type_ids"] == task.build_pairs(docs, "eval")["token_type_ids"]
    assert any(label != -100 for row in held_out["labels"] for label in row)


# --- pretrain ---------------------------------------------------------------------------------


def pretrain_args(arch: str, data: Path, out: Path, *extra: str) -> list[str]:
    return ["pretrain", "--arch", arch, "--size", "tiny", "--train-data", str(data), "--vocab-size", "300",
            "--block-size", "32", "--batch-size", "8", "--max-steps", "8", "--eval-every", "4",
            "--eval-split", "0.2", "--lr", "1e-3", "-o", str(out), "-f", "jsonl", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory, documents_file):
    from .conftest import run_cli

    out = tmp_path_factory.mktemp("pretrain") / "bert"
    result = run_cli(pretrain_args("bert", documents_file, out, "--eval-before"))
    assert result.code == 0, result.stderr
    return out, json.loads(result.stdout)


def test_bert_pretraining_reports_mlm_nsp_and_mfu(bert_run):
    out, summary = bert_run
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "eval_mlm_loss",
        "eval_perplexity",
        "eval_top1_accuracy",
        "eval_top5_accuracy",
        "eval_nsp_accuracy",
    ):
        assert key in metrics["eval"], key
    assert metrics["eval"]["eval_loss"] == pytest.approx(
        metrics["eval"]["eval_mlm_loss"] + metrics["eval"]["eval_nsp_loss"], rel=1e-6
    )
    assert summary["eval_nsp_accuracy"] == round(metrics["eval"]["eval_nsp_accuracy"], 4)
    run = metrics["run"]
    assert run["from_scratch"]["arch"] == "bert" and run["task"] == "mlm+nsp"
    assert 0 < run["mfu"] < 1 and run["model_flops_per_token"] > 0 and run["matmul_peak_gflops"] > 0
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForPreTraining"] and config["num_hidden_layers"] == 2
    assert "pre-training from scratch" in (out / "README.md").read_text()
    saved = (out / "bgcli_config.yaml").read_text()
    assert "arch: bert" in saved and "objective: mlm+nsp" in saved
    assert (out / "init" / "tokenizer_report.json").is_file()  # the vocabulary trained on the fly


def test_model_flops_count_each_weight_once_and_the_projection_by_share():
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from bertgpt_cli.training.flops import model_flops_per_token

    model = BertForMaskedLM(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=32))  # fmt: skip
    embeddings = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    total = sum(p.numel() for p in model.parameters())  # the tied decoder is the word embeddings
    assert model_flops_per_token(model, 0.0) == 6 * (total - embeddings)
    assert model_flops_per_token(model, 0.5) == 6 * (total - embeddings + 0.5 * 100 * 16)


def test_pretrained_bert_loads_in_fill_mask_and_the_pipeline_alike(cli, bert_run):
    from transformers import pipeline

    out, _ = bert_run
    text = "the movie was [MASK] ."
    ours = json.loads(cli(["fill-mask", "-m", str(out), text, "-f", "jsonl", "--top-k", "3"]).stdout)
    reference = pipeline("fill-mask", model=str(out), top_k=3)(text)
    assert [p["token_str"] for p in ours["predictions"]] == [p["token_str"] for p in reference]
    for got, want in zip(ours["predictions"], reference, strict=True):
        assert got["score"] == pytest.approx(want["score"], abs=1e-4)


def test_pretrained_bert_fine_tunes_with_its_trained_pooler(cli, bert_run, tmp_path):
    from safetensors.torch import load_file

    out, _ = bert_run
    train = tmp_path / "labelled.jsonl"
    train.write_text("".join(json.dumps({"text": t, "label": i % 2}) + "\n" for i, t in enumerate(SENTENCES)))
    result = cli(["finetune", "-m", str(out), "--train-data", str(train), "--eval-split", "0", "--lr", "0",
                  "--max-steps", "2", "-o", str(tmp_path / "clf"), "-f", "jsonl"])  # fmt: skip
    assert result.code == 0, result.stderr
    pretrained, classifier = (
        load_file(out / "model.safetensors"),
        load_file(tmp_path / "clf" / "model.safetensors"),
    )
    # lr 0: the encoder and the NSP-trained pooler are carried over as they were
    for key in ("bert.pooler.dense.weight", "bert.encoder.layer.1.output.dense.weight"):
        assert (classifier[key] == pretrained[key]).all(), key


def test_gpt2_pretraining_generates_as_the_pipeline_does(cli, documents_file, tmp_path):
    from transformers import pipeline

    out = tmp_path / "gpt"
    result = cli(pretrain_args("gpt2", documents_file, out))
    assert result.code == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["run"]["task"] == "clm" and "eval_perplexity" in metrics["eval"]
    assert [s["prompt"] for s in metrics["samples_before"]] == [s["prompt"] for s in metrics["samples_after"]]
    assert json.loads((out / "config.json").read_text())["model_type"] == "gpt2"
    ours = json.loads(
        cli(["generate", "-m", str(out), "the movie", "--max-new-tokens", "8", "-f", "jsonl"]).stdout
    )
    reference = pipeline("text-generation", model=str(out))("the movie", max_new_tokens=8, do_sample=False)
    assert "the movie" + ours["completion"] == reference[0]["generated_text"]


def test_pretrain_with_a_given_tokenizer_and_plain_mlm(cli, documents_file, tmp_path):
    assert tokenizer_train(cli, "wordpiece", documents_file, tmp_path / "tok").code == 0
    args = pretrain_args("bert", documents_file, tmp_path / "mlm", "--objective", "mlm", "--tokenizer",
                         str(tmp_path / "tok"))  # fmt: skip
    args.remove("--vocab-size")
    args.remove("300")
    # An earlier unfinished start whose tokenizer was trained on the fly: its report must go.
    (tmp_path / "mlm" / "init").mkdir(parents=True)
    (tmp_path / "mlm" / ".bgcli-run").touch()
    (tmp_path / "mlm" / "init" / "tokenizer_report.json").write_text("{}")
    result = cli(args)
    assert result.code == 0, result.stderr
    assert not (tmp_path / "mlm" / "init" / "tokenizer_report.json").exists()
    config = json.loads((tmp_path / "mlm" / "config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"]
    assert (
        config["vocab_size"]
        == json.loads((tmp_path / "tok" / "tokenizer_report.json").read_text())["vocab_size"]
    )


def test_text_files_hold_one_document_per_paragraph(tmp_path):
    from bertgpt_cli.io.data import load_data

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("First one. Still first.\nAnd more.\n\nSecond document here.\n")
    assert len(load_data(str(corpus), paragraphs=True)) == 2
    assert len(load_data(str(corpus))) > 2  # one record per line


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--arch", "gpt2", "--objective", "mlm+nsp"], "does not fit --arch gpt2"),
        (["--tokenizer", "minilm", "--vocab-size", "500"], "--vocab-size"),
        (["--model-config", "missing.json"], "not found"),
        (["--no-packing"], "mlm+nsp always builds sentence pairs"),
    ],
)
def test_pretrain_flags_are_checked_before_anything_loads(cli, tmp_path, extra, message):
    result = cli(["pretrain", "--train-data", "x.txt", "-o", str(tmp_path / "r"), *extra])
    assert result.code == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()


def test_an_eval_split_of_a_single_document_is_one_line(cli, tmp_path):
    one_paragraph = tmp_path / "one.txt"  # no blank line: one document
    one_paragraph.write_text("the film was long. the cast was fine.\nthe music was loud.\n")
    result = cli(pretrain_args("bert", one_paragraph, tmp_path / "one-doc"))
    assert result.code == 2, result.stderr
    assert "--eval-split 0.2 of 1 documents" in result.stderr and "--eval-data" in result.stderr
    assert "Traceback" not in result.stderr
    again = cli(pretrain_args("bert", one_paragraph, tmp_path / "one-doc"))  # the same usage error,
    assert again.code == 2 and again.stderr == result.stderr  # not "holds files bgcli did not write"
    assert not (tmp_path / "one-doc").exists()  # the failed start's init/ went with it


def test_model_config_file_sets_the_shape(cli, documents_file, tmp_path):
    shape = tmp_path / "shape.json"
    shape.write_text(json.dumps({"model_type": "bert", "hidden_size": 24, "num_hidden_layers": 1,
                                 "num_attention_heads": 2, "intermediate_size": 48}))  # fmt: skip
    result = cli(pretrain_args("bert", documents_file, tmp_path / "r", "--model-config", str(shape)))
    assert result.code == 0, result.stderr
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"]) == (24, 1)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"model_type": "gpt2"}))
    refused = cli(pretrain_args("bert", documents_file, tmp_path / "w", "--model-config", str(wrong)))
    assert refused.code == 2 and 'must be "bert"' in refused.stderr


def test_a_killed_pretraining_run_resumes_to_the_same_final_metrics(cli, documents_file, tmp_path):
    from .test_finetune import kill_after_first_checkpoint_and_resume

    # One tokenizer for both runs: WordPiece training may break count ties differently from one
    # process to the next (tokenizers#1794); a resumed run reuses its own init/ tokenizer.
    assert tokenizer_train(cli, "wordpiece", documents_file, tmp_path / "tok").code == 0
    common = pretrain_args("bert", documents_file, tmp_path / "unused")
    common = (
        common[: common.index("--vocab-size")] + common[common.index("--vocab-size") + 2 : common.index("-o")]
    )
    common += ["--tokenizer", str(tmp_path / "tok")]
    got, want = kill_after_first_checkpoint_and_resume(tmp_path, common, first_checkpoint=4)
    for key in ("eval_loss", "eval_nsp_accuracy", "eval_top5_accuracy"):
        assert got["eval"][key] == pytest.approx(want["eval"][key], rel=1e-5, abs=1e-7), key


def test_size_presets_state_their_parameter_counts():
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model

    from bertgpt_cli.training.from_scratch import SIZES

    size = SIZES["mini"]
    bert = BertModel(BertConfig(vocab_size=10, hidden_size=size.hidden, num_hidden_layers=size.layers,
                                num_attention_heads=size.heads, intermediate_size=size.intermediate),
                     add_pooling_layer=False)  # fmt: skip
    gpt2 = GPT2Model(GPT2Config(vocab_size=10, n_embd=size.hidden, n_layer=size.layers, n_head=size.heads))
    for model, embedding_names in ((bert, ("embeddings.",)), (gpt2, ("wte", "wpe", "ln_f"))):
        body = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(embedding_names))
        assert body == size.body_parameters()


def test_eval_and_embed_take_a_pretraining_run(cli, bert_run, documents_file):
    out, _ = bert_run
    scored = cli(["eval", "-m", str(out), "--data", str(documents_file), "-f", "jsonl"])
    assert scored.code == 0, scored.stderr
    assert "top5_accuracy" in scored.stdout and "perplexity" in scored.stdout
    vectors = cli(["embed", "-m", str(out), "the movie was great", "-f", "jsonl"])
    assert vectors.code == 0, vectors.stderr
    assert len(json.loads(vectors.stdout)["embedding"]) == 128  # tiny: hidden 128


def test_recipes_name_their_command(cli):
    wrong = cli(["finetune", "--recipe", "reviews-bert-mini-pretrain"])
    assert wrong.code == 2 and "bgcli pretrain --recipe" in wrong.stderr
    other = cli(["pretrain", "--recipe", "rt-minilm"])
    assert other.code == 2 and "bgcli finetune --recipe" in other.stderr
    listed = {
        r["name"]: r for r in map(json.loads, cli(["recipes", "list", "-f", "jsonl"]).stdout.splitlines())
    }
    assert listed["reviews-gpt2-mini-pretrain"]["task"] == "pretrain clm"
    assert listed["reviews-bert-mini-pretrain"]["model"] == "bert mini from scratch"


def test_two_process_pretraining_builds_the_start_once(documents_file, tmp_path):
    """--num-processes 2: the launcher trains the tokenizer and writes init/ before torchrun
    starts; both ranks start from it."""
    import subprocess

    from .conftest import BGCLI, ROOT

    args = pretrain_args("bert", documents_file, tmp_path / "two", "--num-processes", "2", "--quiet")
    done = subprocess.run(BGCLI + args, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["run"]["world_size"] == 2 and metrics["run"]["from_scratch"]["arch"] == "bert"
    assert sorted(p.name for p in (tmp_path / "two").glob("*tmp*")) == []
