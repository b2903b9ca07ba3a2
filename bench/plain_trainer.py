"""The baseline: a plain Trainer script with the transformers example defaults, written as
a user would without bgcli. Prints the Trainer's train metrics (and test accuracy) as JSON.

- mlm / clm (run_mlm / run_clm): stock model loss over every token, fp32, texts grouped
  into blocks;
- classification (run_glue): padding to --max-length, fp32; `--padding dynamic
  --group-by-length` is the same script with dynamic padding and length-grouped batches.
- ner (run_ner): first sub-token labels, dynamic padding, truncation at the tokenizer's
  limit, fp32; entity F1 on --test (JSONL tokens/ner_tags) counted by seqeval.
- qa (run_qa): question + context windows (--max-length, --doc-stride) padded to the full
  length, answer positions or CLS, fp32; trains and saves (the bench scores the model).

    python bench/plain_trainer.py --task mlm|clm|classification --model DIR --data F.jsonl --out DIR
"""

from __future__ import annotations

import argparse
import json
from itertools import chain


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", choices=("mlm", "clm", "classification", "ner", "qa"), required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--padding", choices=("max_length", "dynamic"), default="max_length")
    parser.add_argument("--group-by-length", action="store_true")
    parser.add_argument("--doc-stride", type=int, default=128)
    parser.add_argument("--test", help="classification: JSONL with text,label to report accuracy on")
    args = parser.parse_args()
    if args.task == "classification":
        classification(args)
        return
    if args.task == "ner":
        ner(args)
        return
    if args.task == "qa":
        qa(args)
        return

    from datasets import load_dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForMaskedLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )

    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    raw = load_dataset("json", data_files=args.data, split="train")
    if args.task == "mlm":
        model = AutoModelForMaskedLM.from_pretrained(args.model)
        tokenized = raw.map(
            lambda b: tokenizer(b["text"], return_special_tokens_mask=True),
            batched=True,
            remove_columns=raw.column_names,
        )
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    else:
        model = AutoModelForCausalLM.from_pretrained(args.model)
        eos = tokenizer.eos_token_id
        tokenized = raw.map(
            lambda b: {"input_ids": [ids + [eos] for ids in tokenizer(b["text"])["input_ids"]]},
            batched=True,
            remove_columns=raw.column_names,
        )
        collator = default_data_collator

    block = args.block_size

    def group_texts(examples):  # as in run_mlm.py / run_clm.py
        joined = {k: list(chain(*examples[k])) for k in examples}
        total = len(joined["input_ids"]) // block * block
        result = {k: [t[i : i + block] for i in range(0, total, block)] for k, t in joined.items()}
        if args.task == "clm":
            result["labels"] = [ids.copy() for ids in result["input_ids"]]
            result["attention_mask"] = [[1] * block for _ in result["input_ids"]]
        return result

    train = tokenized.map(group_texts, batched=True)
    training_args = TrainingArguments(**common_settings(args), max_steps=args.steps)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train,
        data_collator=collator,
        processing_class=tokenizer,
    )
    metrics = trainer.train().metrics
    trainer.save_model(args.out)
    print(json.dumps(metrics))


def common_settings(args) -> dict:
    """Trainer defaults except what the comparison fixes: batch, lr, seed, CPU, no saving/logging."""
    return dict(
        output_dir=args.out,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        seed=args.seed,
        use_cpu=True,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_steps=1000,
    )


def classification(args) -> None:
    import numpy as np
    from datasets import load_dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )

    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)
    padding = "max_length" if args.padding == "max_length" else False

    def tokenize(batch):
        return tokenizer(batch["text"], padding=padding, truncation=True, max_length=args.max_length)

    def load(path):
        raw = load_dataset("json", data_files=path, split="train")
        return raw.map(tokenize, batched=True, remove_columns=["text"])

    training_args = TrainingArguments(
        **common_settings(args),
        num_train_epochs=args.epochs,
        per_device_eval_batch_size=args.batch_size * 2,
        train_sampling_strategy="group_by_length" if args.group_by_length else "random",
    )
    collator = default_data_collator if padding else DataCollatorWithPadding(tokenizer)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=load(args.data),
        data_collator=collator,
        processing_class=tokenizer,
    )
    metrics = trainer.train().metrics
    if args.test:
        prediction = trainer.predict(load(args.test))
        metrics["test_accuracy"] = float(
            (np.argmax(prediction.predictions, -1) == prediction.label_ids).mean()
        )
    print(json.dumps(metrics))


def ner(args) -> None:
    """As run_ner.py: labels from the training data, the first sub-token of a word tagged."""
    import numpy as np
    from datasets import load_dataset
    from seqeval.metrics import f1_score
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    train_raw = load_dataset("json", data_files=args.data, split="train")
    labels = sorted({t for row in train_raw["ner_tags"] for t in row})
    label_to_id = {name: i for i, name in enumerate(labels)}
    model = AutoModelForTokenClassification.from_pretrained(
        args.model, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label_to_id
    )

    def tokenize_and_align_labels(batch):
        encoded = tokenizer(batch["tokens"], truncation=True, is_split_into_words=True)
        all_labels = []
        for i, tags in enumerate(batch["ner_tags"]):
            previous, row = None, []
            for word in encoded.word_ids(i):
                row.append(-100 if word is None or word == previous else label_to_id[tags[word]])
                previous = word
            all_labels.append(row)
        encoded["labels"] = all_labels
        return encoded

    def load(path):
        raw = load_dataset("json", data_files=path, split="train")
        return raw.map(tokenize_and_align_labels, batched=True, remove_columns=raw.column_names)

    training_args = TrainingArguments(**common_settings(args), num_train_epochs=args.epochs)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=load(args.data),
        data_collator=DataCollatorForTokenClassification(tokenizer),
        processing_class=tokenizer,
    )
    metrics = trainer.train().metrics
    if args.test:
        prediction = trainer.predict(load(args.test))
        best = np.argmax(prediction.predictions, -1)
        gold = [[labels[g] for g in row if g != -100] for row in prediction.label_ids]
        predicted = [
            [labels[p] for p, g in zip(p_row, g_row, strict=True) if g != -100]
            for p_row, g_row in zip(best, prediction.label_ids, strict=True)
        ]
        metrics["test_f1"] = float(f1_score(gold, predicted))
    print(json.dumps(metrics))


def qa(args) -> None:
    """As run_qa.py's prepare_train_features: windows padded to max length; the answer's first
    and last token, or CLS when the window does not hold the whole answer."""
    from datasets import load_dataset
    from transformers import (
        AutoModelForQuestionAnswering,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )

    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForQuestionAnswering.from_pretrained(args.model)

    def prepare_train_features(batch):
        encoded = tokenizer(
            [q.lstrip() for q in batch["question"]],
            batch["context"],
            truncation="only_second",
            max_length=args.max_length,
            stride=args.doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding="max_length",
        )
        samples = encoded.pop("overflow_to_sample_mapping")
        offsets = encoded.pop("offset_mapping")
        encoded["start_positions"], encoded["end_positions"] = [], []
        for i, window_offsets in enumerate(offsets):
            ids = encoded["input_ids"][i]
            cls = ids.index(tokenizer.cls_token_id)
            sequence = encoded.sequence_ids(i)
            answers = batch["answers"][samples[i]]
            start_char = answers["answer_start"][0]
            end_char = start_char + len(answers["text"][0])
            first = sequence.index(1)
            last = len(sequence) - 1 - sequence[::-1].index(1)
            if not (window_offsets[first][0] <= start_char and window_offsets[last][1] >= end_char):
                encoded["start_positions"].append(cls)
                encoded["end_positions"].append(cls)
                continue
            while first < len(window_offsets) and window_offsets[first][0] <= start_char:
                first += 1
            encoded["start_positions"].append(first - 1)
            while window_offsets[last][1] >= end_char:
                last -= 1
            encoded["end_positions"].append(last + 1)
        return encoded

    raw = load_dataset("json", data_files=args.data, split="train")
    train = raw.map(prepare_train_features, batched=True, remove_columns=raw.column_names)
    training_args = TrainingArguments(**common_settings(args), num_train_epochs=args.epochs)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train,
        data_collator=default_data_collator,
        processing_class=tokenizer,
    )
    metrics = trainer.train().metrics
    trainer.save_model(args.out)
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
