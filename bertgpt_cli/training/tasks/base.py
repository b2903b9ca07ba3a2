"""The interface every fine-tuning task implements; training/engine.py only talks to this.

A task decides how records become examples, which head the model gets, how the loss and
the eval metrics are computed, and what the run report says about it. Defaults here are
the Trainer's own behaviour, so a task overrides only what differs.
"""

from __future__ import annotations

from typing import Any

from ...models.heads import Head, head_for


class Task:
    name = ""
    head_task = ""  # the row of models/heads.py whose head this task trains (default: `name`)
    default_metric = "loss"
    card_metrics: tuple[str, ...] = ("loss",)
    # The Trainer reads eval data in length-grouped order; a task whose metrics map
    # predictions back to records by position needs them in dataset order.
    ordered_eval = False
    # Share of positions the output vocabulary projection runs on in training (for the MFU).
    projected_share = 0.0
    # Plain-text files: one record per blank-line separated paragraph (a document) instead of
    # one per line.
    documents_per_paragraph = False
    # The task puts a new head on the model (classification, ner, qa): with --lora it is
    # trained in full, not through adapters.
    trains_new_head = False
    # Token ids the task added to the vocabulary (sft's chatml markers): trained with --lora too.
    new_token_ids: tuple[int, ...] = ()
    # The task orders training records into batches itself (batch_order) instead of the
    # Trainer's length-grouped sampler.
    orders_batches = False
    # prepare applies --max-train-samples to the records itself (one record makes several rows)
    limits_records = False

    @property
    def head(self) -> Head:
        return head_for(self.head_task or self.name)

    @property
    def pipeline_tag(self) -> str:
        return self.head.pipeline_tag

    def __init__(self, config, tokenizer):
        self.config = config
        self.tokenizer = tokenizer
        self.metrics_split = "eval"  # the split compute_metrics is scoring (see evaluating)

    def prepare(self, train, others: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Check columns and tokenize every split, one example per record (datasets.map, cached)."""
        raise NotImplementedError

    def use_model_labels(self, model_config) -> None:
        """Evaluating a trained model (`bgcli eval`): take its label set instead of deriving one
        from training data, so the data's labels map onto the ids the model predicts."""

    def split(self, train, fraction: float, seed: int):
        """Hold out `fraction` of the prepared training records for evaluation."""
        parts = train.train_test_split(test_size=fraction, seed=seed)
        return parts["train"], parts["test"]

    def finalize(self, dataset, split: str):
        """Last step before the Trainer sees a split (e.g. packing into blocks)."""
        return dataset

    def batch_order(self, dataset, batch_size: int, seed: int) -> list[int]:
        """One epoch's order of training records, read in consecutive batches (orders_batches)."""
        raise NotImplementedError

    def model(self, resolved):
        raise NotImplementedError

    def save_files(self, folder) -> None:
        """Files the task adds to the run dir beside the model and tokenizer."""

    def attach(self, model) -> None:
        """Set up what the task keeps about a model it did not load itself (`bgcli eval`)."""

    def collator(self):
        raise NotImplementedError

    def compute_metrics(self):
        """The Trainer's compute_metrics callable, or None for loss only."""
        return None

    def compute_loss(self, model, inputs, num_items_in_batch) -> Any:
        """The training loss, or None to let the Trainer compute it the standard way."""
        return None

    def prediction_step(self, model, inputs) -> tuple[Any, Any, Any] | None:
        """(loss, predictions, labels) for one eval batch, or None for the Trainer's own."""
        return None

    def evaluating(self, split: str) -> None:
        """Called before the final evaluation of a split ("eval", "test"), for tasks whose
        metrics need more than the predictions (NER puts windows back into sentences)."""
        self.metrics_split = split

    def test_report(self, prediction) -> dict[str, Any] | None:
        """Extra test-set report (e.g. per-class scores and a confusion matrix)."""
        return None

    def samples(self, model) -> list[dict[str, str]]:
        """What the model makes of a few fixed prompts, shown before/after in the run report."""
        return []

    def run_info(self) -> dict[str, Any]:
        """Task facts for metrics.json and the model card."""
        return {}

    def report_lines(self, metrics: dict[str, Any]) -> list[str]:
        """Extra model-card sections (markdown lines) from the final metrics."""
        return []

    def card_notes(self) -> list[str]:
        """Model-card bullet points specific to this task."""
        return []


def longest_first(lengths: list[int]) -> list[int]:
    """Row order for an eval split of an `ordered_eval` task: the Trainer then reads it in this
    order, so longest first gives batches of similar lengths (little padding)."""
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])
