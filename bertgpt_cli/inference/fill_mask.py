"""Fill-mask (`bgcli fill-mask`, `api.fill_mask`, the server's /v1/fill-mask): masked-token
prediction, equal to `pipeline("fill-mask")`, batched.

Speed comes from three things the pipeline does not do: length-sorted batches (little
padding), one forward pass per batch, and the vocabulary projection computed only at the
mask positions instead of at every token.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError
from ..io.console import warn
from ..io.records import RecordError, RecordStream, read_input_records, stream_to_writer
from ..options import InputOptions, ModelOptions, OutputOptions, ServerOptions, option
from .loading import InferenceOptions, load_for_inference, model_max_length, process_sorted

GENERIC_MASK = "[MASK]"


@dataclass
class FillMaskConfig(InputOptions, ModelOptions, OutputOptions, InferenceOptions, ServerOptions):
    model: str = option(
        "bert-base-uncased",
        "Masked-LM: local dir (e.g. a `finetune --task mlm` run), Hub id, or alias.",
        short="-m",
        metavar="MODEL",
        panel="Model",
    )
    top_k: int = option(5, "Predictions per mask.", panel="Fill-mask", ge=1)
    targets: str | None = option(
        None,
        "Comma-separated candidates to score instead of the whole vocabulary. A word that is "
        "not one token is scored by its first sub-token (as transformers does), with a warning.",
        panel="Fill-mask",
    )


CONFIG = FillMaskConfig


def input_records(config: FillMaskConfig) -> RecordStream:
    return read_input_records(config.texts, config.input, config.input_format, config.text_field)


def window(config: FillMaskConfig) -> int:
    """Records read ahead and sorted by length together."""
    return config.batch_size * 8


def process(config: FillMaskConfig, records, writer, loaded=None) -> None:
    """Predict the masks of `records` into `writer`: what the CLI and the Python API both run."""
    loaded = load(config) if loaded is None else loaded
    stream_to_writer(records, processor(loaded, config), writer, window=window(config))


def load(config: FillMaskConfig):
    """The heavy part (kept warm by `bgcli serve`): the masked LM and its tokenizer."""
    from transformers import AutoModelForMaskedLM

    model, tokenizer = load_for_inference(
        config, config, AutoModelForMaskedLM, "fill-mask", trained_by="bgcli finetune --task mlm"
    )
    if tokenizer.mask_token is None:
        raise UsageError(f"the tokenizer of '{config.model}' has no mask token; use a masked-LM model")
    return model, tokenizer


def processor(loaded, config: FillMaskConfig):
    model, tokenizer = loaded
    predictor = MaskPredictor(model, tokenizer, config.top_k, parse_targets(config.targets, tokenizer))
    return lambda batch: predictor.predict(batch, config.batch_size)


def parse_targets(targets: str | None, tokenizer) -> list[int] | None:
    """Target words -> token ids, like `pipeline(targets=...)`: a word outside the vocabulary
    is scored by its first sub-token."""
    if not targets:
        return None
    vocab = tokenizer.get_vocab()
    ids = []
    for word in (w.strip() for w in targets.split(",")):
        if not word:
            continue
        if word in vocab:
            ids.append(vocab[word])
            continue
        pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
        if not pieces:
            warn(f"target '{word}' has no tokens in this vocabulary; ignored")
            continue
        if len(pieces) > 1:
            first = tokenizer.convert_ids_to_tokens(pieces[0])
            warn(f"target '{word}' is {len(pieces)} tokens; scoring its first token '{first}'")
        ids.append(pieces[0])
    if not ids:
        raise UsageError("none of --targets is usable with this vocabulary")
    return sorted(set(ids))


class MaskPredictor:
    def __init__(self, model, tokenizer, top_k: int, target_ids: list[int] | None):
        import torch

        self.model = model
        self.tokenizer = tokenizer
        if target_ids:
            self.top_k = min(top_k, len(target_ids))  # as the pipeline: at most every target
        else:
            vocabulary = output_rows(model)
            if top_k > vocabulary:
                warn(f"--top-k {top_k} is more than the vocabulary holds; showing all {vocabulary}")
            self.top_k = min(top_k, vocabulary)
        self.target_ids = torch.tensor(target_ids) if target_ids else None
        self.max_length = model_max_length(tokenizer, model)
        # An ONNX export has no modules to split: its full logits, then the masked positions.
        self.head = mask_head(model) if hasattr(model, "base_model") else None
        self.warned_truncation = False

    def normalize(self, text: str) -> str:
        """`[MASK]` works for every model: map it to the model's own token (e.g. `<mask>`)."""
        mask = self.tokenizer.mask_token
        return text.replace(GENERIC_MASK, mask) if mask != GENERIC_MASK else text

    def predict(self, records, batch_size: int) -> list:
        texts = [self.normalize(r.text) for r in records]
        encoded = self.tokenizer(texts, add_special_tokens=True)["input_ids"]
        checked = [self.check(ids) for ids in encoded]  # ids, or a RecordError for that record
        good = [i for i, ids in enumerate(checked) if not isinstance(ids, RecordError)]

        def run_batch(batch: list[int]) -> list:
            return self.predict_ids([checked[good[i]] for i in batch])

        ordered = process_sorted([len(checked[i]) for i in good], batch_size, run_batch)
        results = list(checked)
        for i, result in zip(good, ordered, strict=True):
            results[i] = result
        return results

    def check(self, ids: list[int]):
        mask_id = self.tokenizer.mask_token_id
        if mask_id not in ids:
            own = self.tokenizer.mask_token
            also = f" (or {own})" if own != GENERIC_MASK else ""
            return RecordError(f"no mask token: put {GENERIC_MASK}{also} where a word is missing")
        if len(ids) <= self.max_length:
            return ids
        kept = ids[: self.max_length - 1] + ids[-1:]  # keep the closing special token
        if kept.count(mask_id) < ids.count(mask_id):
            return RecordError(
                f"a mask falls after the model's {self.max_length}-token limit; shorten the text "
                "or move the mask earlier"
            )
        if not self.warned_truncation:
            warn(f"texts longer than {self.max_length} tokens are truncated")
            self.warned_truncation = True
        return kept

    def predict_ids(self, batch_ids: list[list[int]]) -> list:
        import torch

        tokenizer = self.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        width = max(len(ids) for ids in batch_ids)
        input_ids = torch.full((len(batch_ids), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch_ids), width), dtype=torch.long)
        for row, ids in enumerate(batch_ids):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
        device = self.model.device
        rows, cols = torch.nonzero(input_ids == tokenizer.mask_token_id, as_tuple=True)
        inputs = {"input_ids": input_ids.to(device), "attention_mask": attention.to(device)}
        with torch.inference_mode():
            if self.head is None:  # unknown head layout: full logits, then pick the masks
                logits = self.model(**inputs).logits[rows.to(device), cols.to(device)]
            else:
                hidden = self.model.base_model(**inputs).last_hidden_state
                logits = self.head(hidden[rows.to(device), cols.to(device)])
            logits = logits.float().cpu()
        probs = logits.softmax(dim=-1)
        if self.target_ids is not None:
            probs = probs[:, self.target_ids]
        values, indices = probs.topk(self.top_k)
        if self.target_ids is not None:
            indices = self.target_ids[indices]
        per_row: list[list] = [[] for _ in batch_ids]
        for k, row in enumerate(rows.tolist()):
            per_row[row].append((cols[k].item(), values[k].tolist(), indices[k].tolist()))
        return [[{"predictions": self.describe(batch_ids[r], masks)}] for r, masks in enumerate(per_row)]

    def describe(self, ids: list[int], masks: list) -> list:
        """Records shaped like the pipeline's: one list per mask, or a flat list for one mask."""
        tokenizer = self.tokenizer
        single = len(masks) == 1
        out = []
        for position, scores, token_ids in masks:
            row = []
            for score, token in zip(scores, token_ids, strict=True):
                filled = list(ids)
                filled[position] = token
                row.append(
                    {
                        "token_str": tokenizer.decode([token]),
                        "token": token,
                        "score": score,
                        "sequence": tokenizer.decode(filled, skip_special_tokens=single),
                    }
                )
            out.append(row)
        return out[0] if single else out


def output_rows(model) -> int:
    """How many tokens the model scores: its output projection's rows (config.vocab_size can
    be smaller after a resize)."""
    embeddings = getattr(model, "get_output_embeddings", lambda: None)()
    if embeddings is None:
        return model.config.vocab_size
    weight = embeddings.weight
    weight = weight() if callable(weight) else weight  # --precision int8: a quantized Linear's is a method
    return weight.shape[0]


def mask_head(model):
    """The masked-LM head as a function of hidden states (applied to mask positions only).

    The head is whatever the model holds besides its encoder, applied in order (BERT: cls;
    RoBERTa: lm_head; DistilBERT: transform, activation, layer norm, projector). A tiny
    self-check against the full forward pass returns None (use full logits) if that guess fails.
    """
    import torch

    base = model.base_model
    parts = [
        module
        for module in model.children()
        if module is not base and not isinstance(module, torch.nn.modules.loss._Loss)
    ]

    def head(hidden):
        for module in parts:
            hidden = module(hidden)
        return hidden

    probe = torch.tensor([[model.config.pad_token_id or 0] * 2], device=model.device)
    probe[0, 0] = 1
    with torch.inference_mode():
        full = model(input_ids=probe).logits[0]
        try:
            ours = head(base(input_ids=probe).last_hidden_state[0])
            if ours.shape == full.shape and torch.allclose(ours, full, atol=1e-4, rtol=1e-3):
                return head
        except Exception:  # noqa: BLE001 - unknown head layout: use the full forward
            pass
    return None
