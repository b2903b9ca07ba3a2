"""Sentence and token embeddings, shared by `bgcli embed` and `bgcli search`.

A sentence-transformers model dir (modules.json + 1_Pooling/) says how its vectors are made:
which pooling, whether they are normalised, how many tokens it reads. That is the default
here, so `bgcli embed -m minilm` gives the vectors `SentenceTransformer(minilm).encode` does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..io.console import info, warn
from ..io.records import RecordStream, raise_if_failed, read_input_records, run_stream
from ..models.resolution import model_file
from ..options import InputOptions, ModelOptions, OutputOptions, option
from .loading import InferenceOptions, load_for_inference, model_max_length, process_sorted

POOLINGS = ("auto", "cls", "mean", "max", "last", "tokens")

# sentence-transformers' Pooling config keys -> our pooling names.
ST_POOLING_MODES = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_lasttoken": "last",
}


PANEL = "Embeddings"


@dataclass
class EmbeddingOptions:
    """How texts become vectors; shared by `embed` and `search`."""

    pooling: str = option(
        "auto",
        "How token vectors become one vector: cls, mean, max, last (decoders), or tokens (one vector "
        "per token, with character offsets). auto: the model's sentence-transformers pooling, else cls.",
        choices=POOLINGS,
        panel=PANEL,
    )
    normalize: bool | None = option(
        None,
        "Scale vectors to length 1 (cosine = dot product). Default: as the model's "
        "sentence-transformers config says (minilm: yes), else no.",
        panel=PANEL,
    )
    max_length: int | None = option(
        None,
        "Tokens read per text; longer texts are truncated (with a warning). "
        "Default: the model's sentence-transformers limit (minilm: 256), else its maximum.",
        panel=PANEL,
        ge=2,
    )


@dataclass
class PoolingSetup:
    """How vectors are made: the pooling, normalisation and token limit actually used."""

    pooling: str
    normalize: bool
    max_length: int | None  # the model's own sentence-transformers limit, if it has one
    source: str  # "sentence-transformers config" or "default", shown in logs and saved indexes

    def describe(self) -> dict[str, Any]:
        return {"pooling": self.pooling, "normalize": self.normalize, "pooling_source": self.source}


def _read_json(path: Path | None) -> Any:
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def sentence_transformers_setup(resolved) -> PoolingSetup | None:
    """The pooling a sentence-transformers model dir declares, or None for a plain model."""
    modules = _read_json(model_file(resolved, "modules.json"))
    if not isinstance(modules, list):
        return None
    kinds = {str(m.get("type", "")).rsplit(".", 1)[-1]: m for m in modules if isinstance(m, dict)}
    pooling_module = kinds.get("Pooling")
    if pooling_module is None:
        return None
    pooling_config = _read_json(
        model_file(resolved, f"{pooling_module.get('path', '1_Pooling')}/config.json")
    )
    chosen = [name for key, name in ST_POOLING_MODES.items() if (pooling_config or {}).get(key)]
    unsupported = [
        key
        for key, value in (pooling_config or {}).items()
        if key.startswith("pooling_mode_") and value and key not in ST_POOLING_MODES
    ]
    if len(chosen) != 1 or unsupported:
        warn(
            f"model '{resolved.spec}' pools with {', '.join(chosen + unsupported) or 'an unknown mode'}; "
            "bgcli uses mean pooling instead: pass --pooling to choose"
        )
        chosen = ["mean"]
    extra = sorted(set(kinds) - {"Transformer", "Pooling", "Normalize"})
    if extra:
        warn(
            f"model '{resolved.spec}' has sentence-transformers modules bgcli does not apply "
            f"({', '.join(extra)}): vectors differ from SentenceTransformer.encode"
        )
    limit = (_read_json(model_file(resolved, "sentence_bert_config.json")) or {}).get("max_seq_length")
    return PoolingSetup(
        pooling=chosen[0],
        normalize="Normalize" in kinds,
        max_length=limit if isinstance(limit, int) and limit > 0 else None,
        source="sentence-transformers config",
    )


def pooling_setup(resolved, pooling: str, normalize: bool | None) -> PoolingSetup:
    """--pooling / --normalize over the model's own setup; `auto` = the model's, else cls."""
    own = sentence_transformers_setup(resolved)
    if pooling == "auto":
        setup = own or PoolingSetup("cls", False, None, "default: the model has no pooling config")
    else:
        setup = PoolingSetup(pooling, False, own.max_length if own else None, "--pooling")
    if normalize is not None:
        setup.normalize = normalize
    return setup


def check_pooling_flags(pooling: str, output: str | None) -> None:
    if pooling == "tokens" and output:
        raise UsageError(
            "--pooling tokens gives a vector per token, written as JSON Lines; --output files hold "
            "one vector per text: drop --output, or choose a sentence pooling"
        )


class Embedder:
    """Batched forward passes of the bare encoder (or decoder) and the chosen pooling."""

    def __init__(self, model, tokenizer, setup: PoolingSetup, max_length: int | None, batch_size: int):
        self.model, self.tokenizer, self.setup = model, tokenizer, setup
        limit = model_max_length(tokenizer, model)
        wanted = [n for n in (max_length, setup.max_length) if n]
        self.limit = min([limit, *wanted[:1]])  # --max-length wins over the model's own limit
        self.batch_size = batch_size
        self.truncation_warned = False
        if tokenizer.pad_token is None:  # GPT-style tokenizers: padding is masked out anyway
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        self.dimension = int(model.config.hidden_size)

    def token_lengths(self, texts: list[str]) -> list[int]:
        encoded = self.tokenizer(texts, truncation=False)["input_ids"]
        if any(len(ids) > self.limit for ids in encoded) and not self.truncation_warned:
            warn(f"texts longer than {self.limit} tokens are truncated (as sentence-transformers does)")
            self.truncation_warned = True
        return [min(len(ids), self.limit) for ids in encoded]

    def encode(self, texts: list[str]):
        """One float32 vector per text (a numpy array of shape [len(texts), dimension])."""
        import numpy as np

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        rows = process_sorted(
            self.token_lengths(texts), self.batch_size, lambda batch: self._pooled([texts[i] for i in batch])
        )
        return np.stack(rows).astype(np.float32, copy=False)

    def _forward(self, texts: list[str], **extra):
        import torch

        inputs = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.limit, return_tensors="pt", **extra
        )
        offsets = inputs.pop("offset_mapping", None)
        special = inputs.pop("special_tokens_mask", None)
        inputs = {k: v.to(self.model.device) for k, v in inputs.items()}
        with torch.inference_mode():
            hidden = self.model(**inputs).last_hidden_state.float()
        return hidden, inputs["attention_mask"], offsets, special

    def _pooled(self, texts: list[str]) -> list:
        hidden, mask, _, _ = self._forward(texts)
        vectors = pool(hidden, mask, self.setup.pooling)
        if self.setup.normalize:
            import torch

            vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        return list(vectors.cpu().numpy())

    def token_vectors(self, texts: list[str]) -> list[list[dict]]:
        """Per text: each real (non-special) token with its character offsets and its vector."""
        if not self.tokenizer.is_fast:
            raise UsageError("--pooling tokens needs a fast tokenizer (tokenizer.json) for the offsets")
        self.token_lengths(texts)
        hidden, mask, offsets, special = self._forward(
            texts, return_offsets_mapping=True, return_special_tokens_mask=True
        )
        if self.setup.normalize:
            import torch

            hidden = torch.nn.functional.normalize(hidden, p=2, dim=2)
        results = []
        for row, text in enumerate(texts):
            tokens = []
            for position in range(int(mask[row].sum())):
                if special[row, position]:
                    continue
                start, end = (int(x) for x in offsets[row, position])
                tokens.append(
                    {"token": text[start:end], "start": start, "end": end, "embedding": hidden[row, position]}
                )
            results.append(tokens)
        return results


def pool(hidden, mask, pooling: str):
    """[batch, tokens, dim] -> [batch, dim], padding ignored (right padding assumed)."""
    import torch

    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last":
        last = mask.sum(dim=1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "max":
        return hidden.masked_fill(weights == 0, float("-inf")).max(dim=1).values
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def load_embedder(config, resolved=None) -> Embedder:
    """The model as a bare encoder (a classifier's or QA model's head is left out) + its pooling."""
    from transformers import AutoModel

    from ..models.resolution import resolve_model_options

    resolved = resolved or resolve_model_options(config)
    setup = pooling_setup(resolved, config.pooling, config.normalize)
    model, tokenizer = load_for_inference(
        config,
        config,
        AutoModel,
        "embeddings",
        tokenizer_kwargs={"padding_side": "right"},
        ignore_missing=("pooler.",),
        resolved=resolved,
    )
    return Embedder(model, tokenizer, setup, config.max_length, config.batch_size)


def embedder_for(
    model: str, *, offline: bool, device: str = "auto", batch_size: int = 64, **flags
) -> Embedder:
    """An embedder for `model` with its own pooling, for code that is not the embed command
    (eval's retrieval scores, mining negatives); `flags` are other EmbedConfig fields."""
    return load_embedder(
        EmbedConfig(model=model, offline=offline, device=device, batch_size=batch_size, **flags)
    )


def model_identity(resolved) -> dict[str, Any]:
    """What an index records about its model, to refuse a search with another one: the alias,
    the model dir's absolute path, or the Hub id and revision."""
    if resolved.source == "local":
        return {"model": str(Path(resolved.location).resolve()), "revision": None}
    return {"model": resolved.spec, "revision": resolved.revision}


@dataclass
class EmbedConfig(InputOptions, ModelOptions, OutputOptions, InferenceOptions, EmbeddingOptions):
    output: str | None = option(
        None,
        "Write the vectors to FILE.npy, .safetensors or .parquet (streamed, input order) instead "
        "of JSONL on stdout; .npy/.safetensors rows' text and fields go to FILE.rows.jsonl.",
        short="-o",
        panel="Output",
        metavar="FILE",
    )
    overwrite: bool = option(
        False, "Replace an existing --output file (and its .rows.jsonl sidecar).", panel="Output"
    )


CONFIG = EmbedConfig


def validate(config: EmbedConfig) -> None:
    check_pooling_flags(config.pooling, config.output)
    if config.output:
        from ..io.embedding_files import check_output_path

        check_output_path(config.output, config.overwrite)


def input_records(config: EmbedConfig) -> RecordStream:
    return read_input_records(config.texts, config.input, config.input_format, config.text_field)


def process(config: EmbedConfig, records, writer, embedder=None) -> None:
    """Embed `records` into `writer`, or into the --output file when one is named: what the
    CLI and the Python API both run."""
    embedder = load_embedder(config) if embedder is None else embedder
    setup = embedder.setup
    info(
        f"pooling: {setup.pooling}{', normalised' if setup.normalize else ''} ({setup.source}); "
        f"{embedder.dimension} dimensions, up to {embedder.limit} tokens per text"
    )
    if not config.output:
        embed_stream(records, embedder, writer, config.batch_size, with_line=False)
        return
    from ..io.embedding_files import EmbeddingFileWriter, check_output_path, rows_path

    path = check_output_path(config.output, config.overwrite)
    rows = embed_stream(
        records, embedder, EmbeddingFileWriter(path, embedder.dimension), config.batch_size, True
    )
    sidecar = f" (rows: {rows_path(path)})" if path.suffix != ".parquet" else ""
    info(f"wrote {rows} x {embedder.dimension} embeddings to {path}{sidecar}")


def embed_stream(records, embedder, writer, batch_size: int, with_line: bool) -> int:
    """Run the records into `writer`; a file writer is committed only when the stream ends
    (bad records included: the good rows stay), and removed if it is interrupted."""

    def process(batch):
        if embedder.setup.pooling == "tokens":
            return [
                [{"tokens": [_token_record(t) for t in tokens]}]
                for tokens in embedder.token_vectors([r.text for r in batch])
            ]
        vectors = embedder.encode([r.text for r in batch])
        if with_line:
            return [[{"line": r.line, "embedding": v}] for r, v in zip(batch, vectors, strict=True)]
        return [[{"embedding": json_vector(v)}] for v in vectors]

    window = batch_size * 8 if embedder.setup.pooling != "tokens" else batch_size
    try:
        ok, failed = run_stream(records, process, writer.write, window, writer.flush, writer.input_key)
    except BaseException:
        if hasattr(writer, "abort"):
            writer.abort()
        else:
            writer.close()
        raise
    writer.close()
    raise_if_failed(ok, failed)
    return ok


def _token_record(token: dict) -> dict:
    return {**token, "embedding": json_vector(token["embedding"].cpu().numpy())}


def json_vector(vector) -> list[float]:
    """float32 values with the 9 significant digits that round-trip a float32 exactly
    (a plain float() of a float32 prints 17 digits: twice the bytes for no information)."""
    return [float(f"{x:.9g}") for x in vector.tolist()]
