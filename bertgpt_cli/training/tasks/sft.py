"""Instruction / chat fine-tuning (`--task sft`): a causal LM trained on conversations, the loss
on the assistant's tokens only (every reply, through its end-of-turn token).

Records of four layouts become chat messages (training/chat_data.py), rendered with the
model's chat template (or --chat-template); bad records are reported by number and skipped.
The vocabulary projection runs only at the positions that predict a trained token: for SQuAD
prompts (a paragraph, a question, a five-token answer) that is ~3% of positions, and the
projection is a fifth of a SmolLM2 forward pass.
"""

from __future__ import annotations

from typing import Any

from ...errors import UsageError
from ...io.console import info, warn
from ...io.data import require_columns
from ..chat_data import (
    IGNORE,
    BadRecord,
    Columns,
    detect_layout,
    encode_conversation,
    marked_example,
    required_columns,
    to_messages,
    use_chat_template,
)
from .base import longest_first
from .language_modeling import MAP_BATCH, SAMPLE_NEW_TOKENS, CausalLMTask, MaskedPositionsProjection
from .token_loss import token_cross_entropy

BAD_RECORDS_SHOWN = 10


class SftTask(CausalLMTask):
    name = "sft"
    head_task = "clm"
    default_prompts = ("What is the capital of France?", "Write one sentence about the sea.")

    def __init__(self, config, tokenizer):
        super().__init__(config, tokenizer)
        vocabulary = len(tokenizer)
        use_chat_template(tokenizer, config.chat_template, config.model)
        self.added_tokens = len(tokenizer) - vocabulary  # chatml's markers, new to a base model
        self.new_token_ids = tuple(range(vocabulary, len(tokenizer)))
        self.columns = Columns(config.messages_column, config.prompt_column, config.completion_column)
        self.layout: str | None = None
        self.counts: dict[str, dict[str, int]] = {}
        self.first_example: str | None = None
        self.projection = None
        self.trained_share = 1.0

    @property
    def projected_share(self) -> float:
        return self.trained_share

    @property
    def max_length(self) -> int:
        return min(self.config.max_length, self.model_limit or self.config.max_length)

    # --- data -------------------------------------------------------------------------------

    def prepare(self, train, others):
        spec = self.config.train_data
        fmt = self.config.sft_format
        first = train[0] if len(train) else None
        self.layout = fmt if fmt != "auto" else detect_layout(list(train.column_names), self.columns, first)
        columns = required_columns(self.layout, self.columns)
        require_columns(train, columns, spec)
        for split, data in others.items():
            require_columns(data, columns, split)
        info(f"sft: {self.layout} records, rendered with the chat template")
        train = self._encode(train, "train")
        self.first_example = marked_example(self.tokenizer, train[0]["input_ids"], train[0]["labels"])
        info("first training example, trained tokens inside [[ ]]:\n" + self.first_example)
        trained = sum(sum(1 for x in labels if x != IGNORE) for labels in train[:1000]["labels"])
        total = sum(len(ids) for ids in train[:1000]["input_ids"])
        self.trained_share = trained / max(total, 1)
        return train, {split: self._encode(data, split) for split, data in others.items()}

    def _encode(self, dataset, split: str):
        encoded = dataset.map(
            self.encoder(),
            batched=True,
            batch_size=MAP_BATCH,
            with_indices=True,
            remove_columns=dataset.column_names,
        )
        bad = [(i, reason) for i, reason in enumerate(encoded["bad"]) if reason]
        for index, reason in bad[:BAD_RECORDS_SHOWN]:
            warn(f"{split} record {index + 1}: {reason}; skipped")
        if len(bad) > BAD_RECORDS_SHOWN:
            warn(f"... and {len(bad) - BAD_RECORDS_SHOWN} more bad {split} records")
        if bad and len(bad) * 2 > len(encoded):
            raise UsageError(
                f"{len(bad)} of {len(encoded)} {split} records are bad (first: record {bad[0][0] + 1}: "
                f"{bad[0][1]}); check the layout and column flags (--sft-format, --messages-column...)"
            )
        cut, skipped = sum(encoded["cut"]), sum(encoded["too_long"])
        self.counts[split] = {"records": len(encoded), "bad": len(bad), "cut": cut, "too_long": skipped}
        if cut or skipped:
            info(
                f"{split}: {cut} conversations cut at a turn boundary to fit --max-length {self.max_length}"
                + (f"; {skipped} skipped (their first reply ends past it)" if skipped else "")
            )
        kept = encoded.filter(lambda ok: ok, input_columns="ok")
        if len(kept) == 0:
            raise UsageError(f"no {split} conversation fits --max-length {self.max_length}; raise it")
        return kept.remove_columns(["bad", "cut", "too_long", "ok"])

    def encoder(self):
        tokenizer, layout, columns = self.tokenizer, self.layout, self.columns
        max_length, train_on_prompt = self.max_length, self.config.train_on_prompt

        def encode(batch, indices):
            out: dict[str, list] = {k: [] for k in ("input_ids", "labels", "bad", "cut", "too_long", "ok")}
            names = list(batch)
            for row in range(len(indices)):
                record = {name: batch[name][row] for name in names}
                result, bad = None, ""
                try:
                    messages = to_messages(record, layout, columns)
                    result = encode_conversation(tokenizer, messages, max_length, train_on_prompt)
                except BadRecord as exc:
                    bad = str(exc)
                out["input_ids"].append(result.input_ids if result else [])
                out["labels"].append(result.labels if result else [])
                out["bad"].append(bad)
                out["cut"].append(bool(result and result.cut))
                out["too_long"].append(result is None and not bad)
                out["ok"].append(result is not None)
            return out

        return encode

    def finalize(self, dataset, split: str):
        """--packing flattens batches in the collator (never across examples' attention). Eval
        rows go longest first: batches of similar lengths, and the metrics are sums, so the
        order changes nothing else (eval reads them in order)."""
        if split == "train":
            return dataset
        return dataset.select(longest_first([len(ids) for ids in dataset["input_ids"]]))

    # --- model and loss ---------------------------------------------------------------------

    def model(self, resolved):
        model = super().model(resolved)
        if self.added_tokens:
            model.resize_token_embeddings(len(self.tokenizer))
            info(f"--chat-template chatml: {self.added_tokens} new special tokens added to the vocabulary")
        self.attach(model)
        return model

    def attach(self, model) -> None:
        self.projection = MaskedPositionsProjection(model.get_output_embeddings())

    def collator(self):
        return SftCollator(self.tokenizer, self.config.packing)

    def trained_token_losses(self, model, inputs):
        """Loss per trained token; the vocabulary projection runs where a trained token is next."""
        targets = inputs["shift_labels"]
        selected = targets != IGNORE
        forward = {k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids") if k in inputs}
        # No cache: a training forward needs none, and transformers derives the packed
        # (block-diagonal) mask from the position ids only when there is none.
        with self.projection.only(selected):
            logits = model(**forward, use_cache=False).logits
        chosen = self.projection.pad_targets(targets[selected])
        return token_cross_entropy(logits, chosen), logits, chosen, selected

    def training_losses(self, model, inputs):
        losses, _, targets, _ = self.trained_token_losses(model, inputs)
        return losses, (targets != IGNORE).sum()

    def prediction_step(self, model, inputs):
        losses, logits, targets, selected = self.trained_token_losses(model, inputs)
        valid = targets != IGNORE
        hits = (logits.argmax(dim=-1) == targets) & valid
        rows = selected.nonzero(as_tuple=True)[0]
        if "position_ids" in inputs and selected.shape[0] == 1:  # packed: one row per example
            starts = (inputs["position_ids"][0] == 0).long().cumsum(0) - 1
            rows, count = starts[selected[0]], int(starts[-1]) + 1
        else:
            count = len(selected)
        stats = self.per_example(self.projection.pad_rows(rows), count, [losses, valid, hits])
        return stats[:, 0].sum() / stats[:, 1].sum().clamp(min=1), stats, stats[:, 1]

    # --- report -----------------------------------------------------------------------------

    def samples(self, model) -> list[dict[str, str]]:
        """Greedy replies to fixed user messages, rendered with the chat template."""
        import torch

        tokenizer, out = self.tokenizer, []
        model.eval()
        for prompt in self.sample_prompts():
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
            room = min(SAMPLE_NEW_TOKENS, (self.model_limit or 10**9) - ids["input_ids"].shape[1])
            if room < 1:  # a model with a short context (a tiny test model): nothing to show
                continue
            with torch.inference_mode():
                generated = model.generate(
                    **ids, max_new_tokens=room, do_sample=False, pad_token_id=tokenizer.pad_token_id
                )
            reply = tokenizer.decode(generated[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
            out.append({"prompt": prompt, "output": reply.strip()})
        return out

    def run_info(self) -> dict[str, Any]:
        loss_on = (
            "every token"
            if self.config.train_on_prompt
            else "the assistant's tokens (each reply + end-of-turn)"
        )
        return {
            "layout": self.layout,
            "loss_on": loss_on,
            "packing": bool(self.config.packing),
            "max_length": self.max_length,
            "records": self.counts,
            "perplexity_protocol": (
                f"exp(mean next-token cross-entropy over {loss_on} of the eval conversations)"
            ),
        }

    def report_lines(self, metrics: dict[str, Any]) -> list[str]:
        if not self.first_example:
            return []
        return [
            "## First training example",
            "",
            "Rendered with the chat template; the loss trains on the tokens inside `[[ ]]`.",
            "",
            "```text",
            self.first_example,
            "```",
            "",
        ]

    def card_notes(self) -> list[str]:
        info_ = self.run_info()
        notes = [f"data: {info_['layout']} records; loss on {info_['loss_on']}"]
        for split, counts in self.counts.items():
            notes.append(
                f"{split}: {counts['records']} records, {counts['bad']} bad (skipped), "
                f"{counts['cut']} cut at a turn boundary, {counts['too_long']} too long"
            )
        notes.append(f"perplexity: {info_['perplexity_protocol']}")
        return notes


class SftCollator:
    """Right-padded batches, or with --packing one padding-free row per batch (position ids
    restart per example, so attention never crosses examples: transformers derives the
    block-diagonal mask from them). shift_labels are the next-token targets."""

    def __init__(self, tokenizer, packing: bool):
        from transformers import DataCollatorWithFlattening

        self.tokenizer = tokenizer
        self.flatten = DataCollatorWithFlattening(return_tensors="pt") if packing else None

    def __call__(self, features):
        import torch

        features = [{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features]
        if self.flatten is not None:
            batch = self.flatten(features)  # each example's first label is -100: never a target
            labels = batch["labels"]
            return {
                "input_ids": batch["input_ids"],
                "position_ids": batch["position_ids"],
                "labels": labels,
                "shift_labels": torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE),
            }
        width = max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((len(features), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(features), width), dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE, dtype=torch.long)
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            input_ids[row, :n] = torch.tensor(feature["input_ids"])
            labels[row, :n] = torch.tensor(feature["labels"])
            attention[row, :n] = 1
        shift_labels = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE)
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "labels": labels,
            "shift_labels": shift_labels,
        }
