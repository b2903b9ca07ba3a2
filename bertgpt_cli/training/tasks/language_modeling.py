"""Language-modeling tasks: BERT's masked LM (`mlm`) and GPT's next-token LM (`clm`).

Both turn texts into token blocks (packed: texts concatenated and cut into --block-size
chunks, or one example per record with --no-packing) and report a token-level loss and
perplexity. Eval batches yield per-example sums (loss, token count, hits), so the metrics
are exact token averages and memory stays bounded however large the eval set is.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from itertools import chain
from typing import Any

from ...errors import UsageError
from ...io.console import info, warn
from ...io.data import require_columns
from .base import Task
from .token_loss import token_cross_entropy

# Eval masking uses its own fixed seed, so runs with different --seed compare on the same masks.
EVAL_MASKING_SEED = 0
MAP_BATCH = 1000  # records per datasets.map batch (as run_mlm / run_clm); packing drops each batch's tail
SAMPLE_NEW_TOKENS = 40


class LanguageModelingTask(Task):
    default_metric = "loss"
    default_block_size = 512
    default_prompts: tuple[str, ...] = ()
    # Per-example sums an eval step returns: the first two always, then hit counts.
    stat_names: tuple[str, ...] = ("loss_sum", "tokens")

    def prepare(self, train, others):
        column = self.config.text_column
        require_columns(train, {column: "--text-column"}, self.config.train_data)
        for split, data in others.items():
            require_columns(data, {column: "--text-column"}, split)
        return self._tokenize(train), {k: self._tokenize(v) for k, v in others.items()}

    def _tokenize(self, dataset):
        column, encode = self.config.text_column, self.encoder()

        def tokenize(batch):
            texts = [text if isinstance(text, str) else "" for text in batch[column]]
            return encode(texts)

        return dataset.map(tokenize, batched=True, batch_size=MAP_BATCH, remove_columns=dataset.column_names)

    def encode(self, texts: list[str]) -> dict[str, list]:
        return self.encoder()(texts)

    def encoder(self):
        """texts -> token ids etc. A closure over the tokenizer and the settings it uses only:
        datasets hashes it for its cache key, so unrelated flags (say --output) must not be in it."""
        raise NotImplementedError

    @property
    def model_limit(self) -> int | None:
        limit = self.tokenizer.model_max_length
        return limit if limit and limit < 1_000_000 else None  # "no limit" is stored as ~1e30

    @property
    def block_size(self) -> int:
        wanted = self.config.block_size or min(self.default_block_size, self.model_limit or 10**9)
        if self.model_limit and wanted > self.model_limit:
            if not getattr(self, "_warned_limit", False):
                warn(
                    f"--block-size {wanted} exceeds the model's {self.model_limit}-token limit; "
                    f"using {self.model_limit}"
                )
                self._warned_limit = True
            return self.model_limit
        return wanted

    @property
    def max_length(self) -> int:
        """Truncation length for one example per text (--no-packing)."""
        return min(self.config.max_length, self.model_limit or self.config.max_length)

    def finalize(self, dataset, split: str):
        if not self.config.packing:
            return dataset
        block = self.block_size

        def pack(batch):
            joined = {key: list(chain.from_iterable(values)) for key, values in batch.items()}
            usable = len(joined["input_ids"]) // block * block
            return {key: [v[i : i + block] for i in range(0, usable, block)] for key, v in joined.items()}

        packed = dataset.map(pack, batched=True, batch_size=MAP_BATCH)
        if len(packed) == 0:
            raise UsageError(
                f"the {split} texts are too short to fill one {block}-token block; "
                "pass a smaller --block-size or --no-packing"
            )
        return packed

    def compute_metrics(self):
        names = self.stat_names

        def compute(eval_pred) -> dict[str, float]:
            totals = dict(zip(names, eval_pred.predictions.sum(axis=0).tolist(), strict=True))
            tokens = max(totals["tokens"], 1.0)
            loss = totals["loss_sum"] / tokens
            # "loss" replaces the Trainer's mean of batch means with the exact token average.
            metrics = {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": totals["tokens"]}
            metrics.update({name: totals[name] / tokens for name in names[2:]})
            return metrics

        return compute

    def training_losses(self, model, inputs) -> tuple[Any, Any]:
        """Per-token losses of a training batch (0 where ignored) and its real-token count."""
        raise NotImplementedError

    def compute_loss(self, model, inputs, num_items_in_batch):
        losses, tokens = self.training_losses(model, inputs)
        # With num_items_in_batch (the real tokens of all accumulated batches: masked ones for
        # mlm, shift_labels for clm) the Trainer expects a sum over it and skips its own
        # division by --grad-accum.
        count = num_items_in_batch if num_items_in_batch is not None else tokens.clamp(min=1)
        return losses.sum() / count

    @staticmethod
    def per_example(rows, batch_size: int, columns: list) -> Any:
        """Sum token-level values into one row per example: batch-first, so the Trainer can
        concatenate and gather them across processes like ordinary predictions."""
        import torch

        values = torch.stack([c.float() for c in columns], dim=1)
        return torch.zeros(batch_size, len(columns), device=values.device).index_add_(0, rows, values)

    def sample_prompts(self) -> list[str]:
        return list(self.config.sample_prompts or self.default_prompts)


class MaskedLMTask(LanguageModelingTask):
    name = "mlm"
    card_metrics = ("loss", "perplexity", "top1_accuracy", "top5_accuracy")
    stat_names = ("loss_sum", "tokens", "top1_accuracy", "top5_accuracy")
    default_prompts = ("This movie was [MASK] and I loved it.", "The [MASK] was the best part of the film.")

    @property
    def default_block_size(self) -> int:
        return self.config.max_length

    @property
    def projected_share(self) -> float:
        return self.config.mlm_probability  # MaskedPositionsProjection: masked positions only

    def __init__(self, config, tokenizer):
        super().__init__(config, tokenizer)
        if tokenizer.mask_token is None:
            raise UsageError(f"the tokenizer of '{config.model}' has no mask token; --task mlm needs one")
        self.head_created = self.tied = self.from_scratch = False
        self.projection = None
        if config.whole_word_mask:
            import warnings

            # transformers warns once per collator; say it once, in bgcli's words.
            warnings.filterwarnings("ignore", message="Random token replacement is not supported")
            info("--whole-word-mask: chosen words become [MASK] entirely (no random/kept 10%+10% for words)")

    def encoder(self):
        tokenizer, packing, whole_words = self.tokenizer, self.config.packing, self.config.whole_word_mask
        max_length = None if packing else self.max_length

        def encode(texts):
            return tokenizer(
                texts,
                truncation=not packing,
                max_length=max_length,
                return_special_tokens_mask=True,
                return_offsets_mapping=whole_words,
            )

        return encode

    def model(self, resolved):
        from transformers import AutoModelForMaskedLM

        from ...models.resolution import is_head_weight, load_model

        model, loading = load_model(
            resolved, AutoModelForMaskedLM, "masked-LM training", output_loading_info=True
        )
        self.attach(model)
        self.from_scratch = resolved.source == "scratch"
        missing = loading.get("missing_keys") or []
        # Keys outside the encoder (e.g. "cls.predictions...") missing from the checkpoint: a new
        # head. A tied decoder weight is the loaded embedding, so it is never among them.
        self.head_created = any(is_head_weight(key, model) for key in missing)
        if self.head_created:
            tying = "its decoder is tied to the input embeddings" if self.tied else "its decoder is untied"
            info(f"'{resolved.spec}' has no masked-LM head: created one ({tying})")
        return model

    @property
    def trains_new_head(self) -> bool:
        return self.head_created

    def attach(self, model) -> None:
        decoder = model.get_output_embeddings()
        self.tied = decoder.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
        self.projection = MaskedPositionsProjection(decoder)

    def collator(self):
        from transformers import DataCollatorForLanguageModeling, DataCollatorForTokenClassification

        masker = DataCollatorForLanguageModeling(
            self.tokenizer,
            mlm_probability=self.config.mlm_probability,
            whole_word_mask=self.config.whole_word_mask,
        )
        # Eval sets arrive masked already (finalize); they only need padding, labels with -100.
        padder = DataCollatorForTokenClassification(self.tokenizer)
        seed = self.config.seed

        def collate(features):
            if "labels" in features[0]:
                return padder(features)
            masker.generator = batch_generator(seed, features)
            return masker(features)

        return collate

    def finalize(self, dataset, split: str):
        dataset = super().finalize(dataset, split)
        if split == "train":
            return dataset
        return self.mask_once(dataset)

    def mask_once(self, dataset):
        """Fixed masks for an eval/test set (seeded), so every evaluation scores the same tokens."""
        import torch
        from transformers import DataCollatorForLanguageModeling

        masker = DataCollatorForLanguageModeling(
            self.tokenizer,
            mlm_probability=self.config.mlm_probability,
            whole_word_mask=self.config.whole_word_mask,
        )
        # Seeded here: the collator only seeds its generator inside __call__, not torch_mask_tokens.
        masker.generator = torch.Generator().manual_seed(EVAL_MASKING_SEED)

        def mask(batch):
            out = {"input_ids": [], "attention_mask": [], "labels": []}
            for i, ids in enumerate(batch["input_ids"]):
                offsets = [batch["offset_mapping"][i]] if "offset_mapping" in batch else None
                special = torch.tensor([batch["special_tokens_mask"][i]])
                masked, labels = masker.torch_mask_tokens(torch.tensor([ids]), special, offsets)
                out["input_ids"].append(masked[0].tolist())
                out["attention_mask"].append(batch["attention_mask"][i])
                out["labels"].append(labels[0].tolist())
            return out

        fingerprint = (
            f"{dataset._fingerprint}-mask{EVAL_MASKING_SEED}-{self.config.mlm_probability}"
            f"-{self.config.whole_word_mask}"
        )
        return dataset.map(
            mask,
            batched=True,
            batch_size=MAP_BATCH,
            remove_columns=dataset.column_names,
            new_fingerprint=fingerprint.replace(".", "_"),
        )

    def masked_token_losses(self, model, inputs):
        """Loss per masked token; the vocabulary projection runs at masked positions only."""
        labels = inputs["labels"]
        selected = labels != -100
        with self.projection.only(selected):
            logits = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits
        targets = self.projection.pad_targets(labels[selected])
        return token_cross_entropy(logits, targets), logits, targets, selected

    def training_losses(self, model, inputs):
        losses, _, targets, _ = self.masked_token_losses(model, inputs)
        return losses, (targets != -100).sum()

    def prediction_step(self, model, inputs):
        losses, logits, targets, selected = self.masked_token_losses(model, inputs)
        stats = self.projection_stats(losses, logits, targets, selected)
        return stats[:, 0].sum() / stats[:, 1].sum().clamp(min=1), stats, stats[:, 1]

    def projection_stats(self, losses, logits, targets, selected):
        """Per-example sums (loss, tokens, top-1 hits, top-5 hits) over the projected rows;
        padded rows (target -100) add nothing."""
        valid = targets != -100
        top5 = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
        hit1 = (top5[:, 0] == targets) & valid
        hit5 = (top5 == targets[:, None]).any(dim=-1) & valid
        rows = self.projection.pad_rows(selected.nonzero(as_tuple=True)[0])
        return self.per_example(rows, len(selected), [losses, valid, hit1, hit5])

    def samples(self, model) -> list[dict[str, str]]:
        """Top-5 fillers for each fixed prompt's first mask."""
        import torch

        from ...inference.fill_mask import GENERIC_MASK

        tokenizer, out = self.tokenizer, []
        model.eval()
        for prompt in self.sample_prompts():
            ids = tokenizer(prompt.replace(GENERIC_MASK, tokenizer.mask_token), return_tensors="pt")
            ids = {k: v.to(model.device) for k, v in ids.items()}
            positions = (ids["input_ids"][0] == tokenizer.mask_token_id).nonzero()
            if len(positions) == 0:
                continue
            with torch.inference_mode():
                output = model(**ids)
            # A pre-training model (BertForPreTraining) names its MLM scores prediction_logits.
            logits = getattr(output, "logits", None)
            logits = (logits if logits is not None else output.prediction_logits)[0, positions[0, 0]]
            top = logits.float().softmax(-1).topk(5)
            words = [tokenizer.decode([t]).strip() for t in top.indices.tolist()]
            out.append({"prompt": prompt, "output": ", ".join(words)})
        return out

    def run_info(self) -> dict[str, Any]:
        head = "from the checkpoint"
        if self.from_scratch:
            head = "initialised at random with the rest of the model (pre-training from scratch)"
        elif self.head_created:
            head = "created, decoder tied to the input embeddings" if self.tied else "created"
        return {
            "head": head,
            "perplexity_protocol": (
                f"exp(mean cross-entropy over the masked tokens of the eval set); "
                f"{self.config.mlm_probability:.0%} of tokens masked 80/10/10 with fixed seed "
                f"{EVAL_MASKING_SEED}"
                + (", whole words" if self.config.whole_word_mask else "")
                + f"; {self.layout()}"
            ),
        }

    def layout(self) -> str:
        if self.config.packing:
            return f"texts packed into {self.block_size}-token blocks"
        return f"one example per text, truncated to {self.max_length} tokens"

    def card_notes(self) -> list[str]:
        notes = [f"perplexity: {self.run_info()['perplexity_protocol']}"]
        if self.head_created:
            notes.insert(0, f"masked-LM head: {self.run_info()['head']} (the starting model had none)")
        return notes


def batch_generator(seed: int, features: list[dict]):
    """A generator seeded by --seed and the batch's tokens. The masks are then a function of
    the batch alone, not of the global RNG, which the Trainer's one-batch-ahead loading and its
    RNG restore on resume would otherwise interleave differently: a resumed run masks exactly
    as an uninterrupted one. Batches differ between epochs, so the masks do too."""
    import hashlib

    import torch

    digest = hashlib.blake2b(str(seed).encode(), digest_size=8)
    for feature in features:
        digest.update(b"|" + ",".join(map(str, feature["input_ids"])).encode())
    return torch.Generator().manual_seed(int.from_bytes(digest.digest(), "little") >> 1)


def rounded_rows(count: int) -> int:
    """A multiple of 16 rows (64 past 256, 256 past 2048): few distinct projection shapes."""
    step = 16 if count <= 256 else 64 if count <= 2048 else 256
    return -(-count // step) * step


class MaskedPositionsProjection:
    """Restricts the vocabulary projection (hidden x vocab, the biggest matmul of a small
    encoder) to the masked positions. A forward pre-hook on the head's decoder: the model is
    still called through its own forward, so DDP and autocast wrappers keep working.

    The selected rows are padded with zero rows to `rounded_rows`: their number differs in
    every batch, and each new N x vocab shape left memory behind in oneDNN and the allocator
    (as batch lengths did: engine.RoundedLengths). Callers pad the targets to match with -100
    (`pad_targets`): padded rows then cost no loss and no gradient."""

    def __init__(self, decoder):
        self.selected = None
        self.count = self.padding = 0
        decoder.register_forward_pre_hook(self._select)

    def _select(self, module, args):
        if self.selected is None:
            return None
        rows = args[0][self.selected]
        if self.padding:
            import torch.nn.functional as F

            rows = F.pad(rows, (0, 0, 0, self.padding))
        return (rows,)

    @contextmanager
    def only(self, selected):
        self.count = int(selected.sum())
        self.selected, self.padding = selected, rounded_rows(self.count) - self.count
        try:
            yield
        finally:
            self.selected = None

    def pad_targets(self, targets):
        """The selected positions' targets, with -100 for the padded rows of the last `only`."""
        import torch.nn.functional as F

        return F.pad(targets, (0, self.padding), value=-100) if self.padding else targets

    def pad_rows(self, rows):
        """Batch rows of the selected positions; padded rows count for row 0 with zero values."""
        import torch.nn.functional as F

        return F.pad(rows, (0, self.padding), value=0) if self.padding else rows


class CausalLMTask(LanguageModelingTask):
    name = "clm"
    card_metrics = ("loss", "perplexity", "next_token_accuracy")
    stat_names = ("loss_sum", "tokens", "next_token_accuracy")
    projected_share = 1.0
    default_prompts = ("This movie was", "The acting in this film", "I would not recommend")

    def __init__(self, config, tokenizer):
        super().__init__(config, tokenizer)
        if tokenizer.eos_token_id is None:
            raise UsageError(
                f"the tokenizer of '{config.model}' has no end-of-text token; --task clm needs one"
            )
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token  # padding is masked out of the labels

    def encoder(self):
        tokenizer, eos = self.tokenizer, self.tokenizer.eos_token_id
        limit = None if self.config.packing else self.max_length

        def encode(texts):
            # Each text ends with EOS: packed blocks then read "text <eos> text <eos> ...".
            ids = [(x + [eos])[:limit] for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]
            return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]}

        return encode

    def model(self, resolved):
        from transformers import AutoModelForCausalLM

        from ...models.resolution import load_model

        model = load_model(resolved, AutoModelForCausalLM, "causal-LM training")
        if model.config.pad_token_id is None:
            model.config.pad_token_id = self.tokenizer.pad_token_id
        return model

    def collator(self):
        return CausalLMCollator(self.tokenizer)

    def next_token_losses(self, model, inputs):
        """Loss per position against the next token (the collator's shift_labels; -100 where
        there is none): the logits stay in the model's dtype, see token_loss."""
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        targets = inputs["shift_labels"]
        losses = token_cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return losses.view(targets.shape), logits, targets

    def training_losses(self, model, inputs):
        losses, _, targets = self.next_token_losses(model, inputs)
        return losses, (targets != -100).sum()

    def prediction_step(self, model, inputs):
        import torch

        losses, logits, targets = self.next_token_losses(model, inputs)
        valid = targets != -100
        rows = valid.nonzero(as_tuple=True)[0]
        hits = logits.argmax(dim=-1)[valid] == targets[valid]
        token_losses = losses[valid]
        stats = self.per_example(rows, len(targets), [token_losses, torch.ones_like(token_losses), hits])
        mean = token_losses.mean() if len(token_losses) else token_losses.sum()
        return mean, stats, stats[:, 1]

    def samples(self, model) -> list[dict[str, str]]:
        """Greedy continuations (no 3-gram repeats, so a small model does not just loop)."""
        import torch

        tokenizer, out = self.tokenizer, []
        model.eval()
        for prompt in self.sample_prompts():
            ids = tokenizer(prompt, return_tensors="pt").to(model.device)
            with torch.inference_mode():
                generated = model.generate(
                    **ids,
                    max_new_tokens=SAMPLE_NEW_TOKENS,
                    do_sample=False,
                    no_repeat_ngram_size=3,
                    pad_token_id=tokenizer.pad_token_id,
                )
            text = tokenizer.decode(generated[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
            out.append({"prompt": prompt, "output": text})
        return out

    def run_info(self) -> dict[str, Any]:
        if self.config.packing:
            layout = f"texts joined with EOS and cut into {self.block_size}-token blocks, no stride overlap"
        else:
            layout = f"one example per text (+ EOS), truncated to {self.max_length} tokens"
        return {
            "block_size": self.block_size if self.config.packing else None,
            "perplexity_protocol": (
                f"token-level: exp(mean next-token cross-entropy over every predicted token of the "
                f"eval set, padding excluded); {layout}"
            ),
        }

    def card_notes(self) -> list[str]:
        return [f"perplexity: {self.run_info()['perplexity_protocol']}"]


class CausalLMCollator:
    """Pads (right) and sets labels = input ids, with -100 on padding only: when pad == EOS
    the real EOS tokens still count, unlike DataCollatorForLanguageModeling(mlm=False).
    shift_labels[:, i] = labels[:, i + 1] (-100 at the end) are the next-token targets; the
    Trainer also counts them for the loss normalisation."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, features):
        import torch

        width = max(len(f["input_ids"]) for f in features)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(features), width), pad, dtype=torch.long)
        attention = torch.zeros((len(features), width), dtype=torch.long)
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            input_ids[row, :n] = torch.tensor(feature["input_ids"])
            attention[row, :n] = 1
        labels = input_ids.masked_fill(attention == 0, -100)
        shift_labels = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "labels": labels,
            "shift_labels": shift_labels,
        }
