"""Shared fixtures: offline for the whole session, tiny random BERT / GPT-2 models built
on the fly, and a helper that runs the CLI as a user does (exit code, stdout, stderr)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# Set before any HF library is imported: they read these at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
BGCLI = [sys.executable, "-m", "bertgpt_cli"]

CORPUS = [
    "the movie was great and the actors were wonderful",
    "a terrible film with a boring plot and bad acting",
    "i loved the music but the story was slow",
    "the best picture of the year, a moving story",
    "paris is the capital of france and london of england",
    "the cat sat on the mat while the dog slept",
    "what a fun and charming comedy for the whole family",
    "dull, long and predictable; i want my money back",
]


@pytest.fixture(scope="session", autouse=True)
def bgcli_home(tmp_path_factory):
    """A private bgcli cache (the smollm2 copy is converted once per session)."""
    home = tmp_path_factory.mktemp("bgcli-home")
    os.environ["BGCLI_HOME"] = str(home)
    return home


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(args: list[str], input: bytes | str | None = None) -> CliResult:
    """Run `bgcli ARGS` in-process with Typer's isolated stdin/stdout/stderr."""
    from typer.testing import CliRunner

    from bertgpt_cli.cli.app import main
    from bertgpt_cli.io.console import set_verbosity

    runner = CliRunner()
    if isinstance(input, str):
        input = input.encode()
    with runner.isolation(input=input) as (out, err, _):
        code = main(args)
        sys.stdout.flush()
        sys.stderr.flush()
        result = CliResult(code, out.getvalue().decode(), err.getvalue().decode())
    set_verbosity(False, False)
    return result


@pytest.fixture
def cli():
    return run_cli


def interrupt_and_wait(proc, timeout: float = 120) -> bytes:
    """Ctrl-C a process started by `start_interruptible`; its stderr. Killed if it does not end,
    so a failed test leaves no training process behind."""
    import signal
    import subprocess

    proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise


def start_interruptible(args: list[str], **kwargs):
    """Popen with Ctrl-C's default action restored in the child: a runner that starts the test
    session in the background (SIGINT ignored, inherited) must not make Ctrl-C a no-op."""
    import signal
    import subprocess

    return subprocess.Popen(
        args, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), cwd=ROOT, **kwargs
    )


def _wordpiece_tokenizer(lines: list[str] = CORPUS):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    # The vocabulary is built in a fixed order instead of trained: `tokenizers`' WordPiece
    # trainer picks and numbers tokens of equal frequency in a per-process hash order, so
    # every test process got another vocabulary, hence another random model (a flaky test).
    # Corpus words are whole tokens; other words split into ##characters, as WordPiece does.
    words = sorted(
        {w for line in lines for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line))}
    )
    chars = sorted({c for w in words for c in w})
    vocab = specials + words + [c for c in chars if c not in words] + ["##" + c for c in chars]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    )


def _byte_level_tokenizer():
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=300, special_tokens=["<|endoftext|>"])
    # Like GPT-2: bos = eos = <|endoftext|>, and no pad token.
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=64,
    )


def tiny_bert_sizes(tokenizer) -> dict:
    """The tiny BERT shape shared by the masked-LM and classifier fixtures."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
        "pad_token_id": tokenizer.pad_token_id,
    }


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A random 2-layer BERT with an MLM head and a WordPiece tokenizer trained on CORPUS."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = _wordpiece_tokenizer()
    config = BertConfig(**tiny_bert_sizes(tokenizer))
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def bare_encoder_dir(tmp_path_factory, tiny_bert_dir) -> Path:
    """Like the built-in minilm: a BERT encoder saved without any head (no MLM head, no
    classifier), with the tiny BERT's tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("bare-encoder")
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    BertModel(BertConfig(**tiny_bert_sizes(tokenizer)), add_pooling_layer=False).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _tiny_causal_lm(tmp_path_factory, name: str, config_class, model_class, **sizes) -> Path:
    """A random causal LM saved with the byte-level BPE tokenizer (bos = eos, no pad token)."""
    import torch

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp(name)
    tokenizer = _byte_level_tokenizer()
    eos = tokenizer.eos_token_id
    config = config_class(vocab_size=len(tokenizer), bos_token_id=eos, eos_token_id=eos, **sizes)
    model_class(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    """A random 2-layer GPT-2 with a byte-level BPE tokenizer and no pad token."""
    from transformers import GPT2Config, GPT2LMHeadModel

    sizes = {"n_positions": 64, "n_embd": 32, "n_layer": 2, "n_head": 2}
    return _tiny_causal_lm(tmp_path_factory, "tiny-gpt2", GPT2Config, GPT2LMHeadModel, **sizes)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A random 2-layer Llama (bias-free nn.Linear layers, grouped KV heads, as in SmolLM2)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    sizes = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "max_position_embeddings": 64,
    }
    sizes |= {"num_attention_heads": 4, "num_key_value_heads": 2}
    return _tiny_causal_lm(tmp_path_factory, "tiny-llama", LlamaConfig, LlamaForCausalLM, **sizes)


def _tiny_classifier(folder: Path, tokenizer_dir: Path, labels: list[str], multi_label: bool) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(1)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = BertConfig(
        **tiny_bert_sizes(tokenizer),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        problem_type="multi_label_classification" if multi_label else "single_label_classification",
        initializer_range=0.5,  # large weights: texts get clearly different logits
    )
    model = BertForSequenceClassification(config)
    # Set the weights explicitly: after a GGUF load in the same process, transformers may
    # skip its own init, and small weights would give every text the same label.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.5)
            elif "LayerNorm.weight" not in name:
                param.zero_()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory, tiny_bert_dir) -> Path:
    folder = tmp_path_factory.mktemp("tiny-classifier")
    return _tiny_classifier(folder, tiny_bert_dir, ["negative", "neutral", "positive"], multi_label=False)


@pytest.fixture(scope="session")
def tiny_multilabel_dir(tmp_path_factory, tiny_bert_dir) -> Path:
    folder = tmp_path_factory.mktemp("tiny-multilabel")
    return _tiny_classifier(folder, tiny_bert_dir, ["action", "comedy", "drama"], multi_label=True)


NER_LABELS = ["O", "B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER"]
# Words for the NER fixtures: names, places, and Chinese characters (offsets are characters).
NER_LINES = [
    "angela merkel met emmanuel macron in paris",
    "the united nations office in new york hired john smith",
    "我爱北京天安门",
]


@pytest.fixture(scope="session")
def tiny_ner_dir(tmp_path_factory) -> Path:
    """A random 2-layer BERT token classifier (BIO labels, large weights so that it tags
    things) with a WordPiece tokenizer that knows CORPUS, NER_LINES and Chinese characters."""
    import torch
    from transformers import BertConfig, BertForTokenClassification

    torch.manual_seed(2)
    folder = tmp_path_factory.mktemp("tiny-ner")
    tokenizer = _wordpiece_tokenizer(CORPUS + NER_LINES)
    config = BertConfig(
        **tiny_bert_sizes(tokenizer),
        id2label=dict(enumerate(NER_LABELS)),
        label2id={name: i for i, name in enumerate(NER_LABELS)},
    )
    model = BertForTokenClassification(config)
    # Large word embeddings and classifier, small layers in between: the tag depends on the
    # token (so there are entities of several types), a little on its neighbours.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.05)
            elif "LayerNorm.weight" not in name:
                param.zero_()
        model.bert.embeddings.word_embeddings.weight.normal_(0.0, 1.0)
        model.classifier.weight.normal_(0.0, 1.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_qa_dir(tmp_path_factory, tiny_bert_dir) -> Path:
    """A random 2-layer BERT with a span (question-answering) head and the tiny BERT's tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForQuestionAnswering

    torch.manual_seed(3)
    folder = tmp_path_factory.mktemp("tiny-qa")
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    BertForQuestionAnswering(BertConfig(**tiny_bert_sizes(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# The run dirs and input files the docs' examples name (test_docs.py, test_api.py).


@pytest.fixture(scope="module")
def fixture_runs(
    tiny_classifier_dir, tiny_multilabel_dir, tiny_bert_dir, tiny_gpt2_dir, tiny_ner_dir, tiny_qa_dir
) -> dict[str, Path]:
    return {
        "rt": tiny_classifier_dir,
        "rt-long": tiny_classifier_dir,
        "qa": tiny_qa_dir,
        "ner": tiny_ner_dir,
        "genres": tiny_multilabel_dir,
        "mlm": tiny_bert_dir,
        "movies-minilm-mlm": tiny_bert_dir,
        "clm": tiny_gpt2_dir,
    }


def write_inputs(folder: Path) -> None:
    reviews = ["a gorgeous, witty movie", "dull and lifeless", "the best film of the year", "boring plot"] * 4
    (folder / "reviews.txt").write_text("\n".join(reviews) + "\n")
    (folder / "sentences.txt").write_text("the movie was [MASK] .\ni loved the [MASK] .\n")
    (folder / "prompts.txt").write_text("the movie was\nonce upon a time\n")
    (folder / "corpus.txt").write_text("\n".join(reviews * 3) + "\n")
    sentences = [
        "the story follows a family across three summers by the sea",
        "the acting is warm and the jokes land more often than not",
        "sadly the last act drags on for far too long before the end",
        "the music, the light and the small town all feel very real",
    ]
    documents = [". ".join(sentences[i % 4 :] + sentences[: i % 4]) + "." for i in range(24)]
    (folder / "documents.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in documents))
    (folder / "reviews.jsonl").write_text(
        "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(reviews))
    )
    rows = "".join(f'"{t}",{"positive" if i % 2 == 0 else "negative"}\n' for i, t in enumerate(reviews))
    (folder / "reviews.csv").write_text("text,sentiment\n" + rows)
    (folder / "test.csv").write_text("text,sentiment\n" + rows)
    news = [
        "Angela Merkel met Emmanuel Macron in Paris.",
        "The United Nations office in New York hired John Smith.",
    ]
    (folder / "news.jsonl").write_text(
        "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(news))
    )
    (folder / "news.txt").write_text("\n".join(news) + "\n")
    tagged = [("Angela", "B-PER"), ("Merkel", "I-PER"), ("met", "O"), ("Macron", "B-PER"), ("in", "O")]
    tagged += [("Paris", "B-LOC"), (".", "O")]
    conll = "".join(f"{word} {tag}\n" for word, tag in tagged) + "\n"
    (folder / "train.conll").write_text(conll * 12)
    (folder / "dev.conll").write_text(conll * 2)
    article = "Super Bowl 50 was played on February 7, 2016. The Denver Broncos won the game 24-10."
    (folder / "article.txt").write_text(article + "\n")
    questions = ["Who won Super Bowl 50?", "When was the game played?"]
    (folder / "questions.txt").write_text("\n".join(questions) + "\n")
    (folder / "questions.jsonl").write_text(
        "".join(
            json.dumps({"id": i, "question": q, "context": article}) + "\n" for i, q in enumerate(questions)
        )
    )
    genres = [["comedy"], ["drama"], ["comedy", "romance"], []]
    (folder / "movies.jsonl").write_text(
        "".join(json.dumps({"text": t, "genres": genres[i % 4]}) + "\n" for i, t in enumerate(reviews))
    )
