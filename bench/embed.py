"""embed: ours vs sentence-transformers on the built-in minilm and the RT sentences.

sentences/s of `bgcli embed`'s Embedder against `SentenceTransformer.encode` at its default
batch size (32) on the 1,066 RT test sentences, with the largest difference between the two
sets of vectors (equal means within 1e-5).
"""

from __future__ import annotations

import os

from .assets import rt_sentences
from .inference import REPEATS, alternate, row

BATCH = int(os.environ.get("BENCH_EMBED_BATCH", "64"))


def run():
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from bertgpt_cli.cli.commands.embed import EmbedConfig
    from bertgpt_cli.inference.embed import load_embedder
    from bertgpt_cli.io.assets import BUILTIN_MODELS

    sentences = rt_sentences()
    reference = SentenceTransformer(str(BUILTIN_MODELS["minilm"].model_dir()), device="cpu")
    embedder = load_embedder(EmbedConfig(model="minilm", batch_size=BATCH))
    measured = alternate(
        {
            "ours": lambda: embedder.encode(sentences),
            "st": lambda: reference.encode(sentences, batch_size=32),
        },
        len(sentences),
        REPEATS,
    )
    (ours_rate, ours_out), (st_rate, st_out) = measured["ours"], measured["st"]
    difference = float(np.abs(ours_out - st_out).max())
    rows = []
    for precision in ("bf16", "int8"):
        fast = load_embedder(EmbedConfig(model="minilm", batch_size=BATCH, precision=precision))
        rate, vectors = alternate(
            {"fast": lambda fast=fast: fast.encode(sentences)}, len(sentences), REPEATS
        )["fast"]
        cosine = (vectors * ours_out).sum(axis=1)  # both normalised
        rows.append(
            row(
                f"embed {precision} vs fp32 (ours)",
                rate,
                ours_rate,
                "sentences/s",
                False,
                "bgcli embed fp32",
                items=len(sentences),
                min_cosine_with_fp32=round(float(cosine.min()), 4),
                mean_cosine_with_fp32=round(float(cosine.mean()), 5),
            )
        )
    return rows + [
        row(
            "embed fp32 vs SentenceTransformer.encode",
            ours_rate,
            st_rate,
            "sentences/s",
            difference < 1e-5,
            "SentenceTransformer(minilm).encode, default batch 32",
            items=len(sentences),
            batch_size=BATCH,
            max_abs_difference=difference,
        ),
    ]
