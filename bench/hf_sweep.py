"""The baseline of `python -m bench sweep`: Trainer.hyperparameter_search(backend="optuna") on
the same train / eval files, space (bench/rt-space.yaml) and time budget, written as a user
would: dynamic padding, max length 128, bf16 autocast where the CPU has bf16 units, accuracy
on the eval split, optuna's defaults: TPE and the median pruner (the Trainer reports each
evaluation and stops a trial optuna prunes). Prints the best trial as JSON.

    python bench/hf_sweep.py MODEL_DIR train.jsonl eval.jsonl OUT_DIR MINUTES
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    import numpy as np
    from datasets import load_dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from bertgpt_cli.models.devices import cpu_bf16_units

    model_dir, train_file, eval_file, out, minutes = sys.argv[1:6]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data = load_dataset("json", data_files={"train": train_file, "eval": eval_file})
    # the split files carry label names, as the test split does; the Trainer wants class ids
    data = data.class_encode_column("label")
    data = data.map(lambda b: tokenizer(b["text"], truncation=True, max_length=128), batched=True)

    def model_init(trial=None):
        return AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)

    def hp_space(trial):
        return {
            "learning_rate": trial.suggest_float("learning_rate", 2e-5, 3e-4, log=True),
            "num_train_epochs": trial.suggest_categorical("num_train_epochs", [2, 3, 4]),
            "per_device_train_batch_size": trial.suggest_categorical("per_device_train_batch_size", [16, 32]),
            "warmup_steps": trial.suggest_categorical("warmup_steps", [0.0, 0.06, 0.1]),
            "weight_decay": trial.suggest_categorical("weight_decay", [0.0, 0.01, 0.1]),
        }

    def accuracy(prediction):
        return {"accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}

    args = TrainingArguments(
        output_dir=out,
        eval_strategy="epoch",
        save_strategy="no",
        bf16=bool(cpu_bf16_units()),
        use_cpu=True,
        report_to="none",
        seed=42,
        lr_scheduler_type="linear",
        logging_steps=100,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model_init=model_init,
        args=args,
        train_dataset=data["train"],
        eval_dataset=data["eval"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=accuracy,
    )
    started = time.time()
    best = trainer.hyperparameter_search(
        direction="maximize",
        backend="optuna",
        hp_space=hp_space,
        n_trials=1000,
        timeout=float(minutes) * 60,
        compute_objective=lambda metrics: metrics["eval_accuracy"],
    )
    names = {
        "learning_rate": "lr",
        "num_train_epochs": "epochs",
        "per_device_train_batch_size": "batch_size",
        "warmup_steps": "warmup",
        "weight_decay": "weight_decay",
    }
    params = {names[k]: v for k, v in best.hyperparameters.items()}
    record = {"best": {"value": best.objective, "params": params}, "seconds": round(time.time() - started, 1)}
    print(json.dumps(record))


if __name__ == "__main__":
    main()
