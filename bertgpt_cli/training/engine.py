"""The fine-tuning run: data -> task -> Trainer -> run dir (model, config, metrics, report)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ..errors import UsageError, first_line
from ..io.atomic import apply_umask, write_text_atomically
from ..io.console import VERBOSITY, info, warn
from ..io.data import load_data
from ..io.run_dirs import FINAL_TEMP, RUN_CONFIG, last_complete_checkpoint, remove_failed_save, resume_command
from ..models.devices import cpu_bf16_units, reuse_freed_memory
from ..models.resolution import check_tokenizer_fits_model, load_config, load_tokenizer, resolve_model_options
from .recipes import recipe_values
from .tasks import task_class


def train(config, run_dir: Path, saved_config=None, callbacks=()) -> dict[str, Any]:
    """Train as `config` says; `saved_config` is what bgcli_config.yaml records (default: config;
    `bgcli pretrain` records its own settings, which rebuild the same run); `callbacks` are
    more TrainerCallbacks (a sweep's pruning)."""
    from transformers import set_seed

    started = time.time()
    reuse_freed_memory()
    set_seed(config.seed)
    args = training_arguments(config, task_class(config), run_dir)  # joins torchrun's process group
    # Rank 0 first: it converts built-in models and fills the datasets cache; the other ranks
    # then read both instead of writing the same files at the same time.
    with args.main_process_first(desc="model and data preparation"):
        resolved = resolve_model_options(config)
        tokenizer = load_tokenizer(resolved)
        check_tokenizer_fits_model(resolved, tokenizer, load_config(resolved))
        task = task_class(config)(config, tokenizer)
        train_set, eval_set, test_set = load_splits(config, task)
    model = task.model(resolved)
    eager_attention_for_cpu_dropout(model, args.device)
    if config.lora:
        from ..models.resolution import checkpoint_keys
        from .lora import wrap

        model = wrap(model, config, task.trains_new_head, task.new_token_ids, checkpoint_keys(resolved))
    trainer = build_trainer(config, task, model, tokenizer, args, train_set, eval_set)
    for callback in callbacks:
        trainer.add_callback(callback)
    checkpoint = resume_checkpoint(config.resume, run_dir)
    if trainer.is_world_process_zero():
        write_config(saved_config or config, run_dir)  # first: an interrupted run can be resumed from it
    before = evaluate_before(config, trainer, task, eval_set, checkpoint)
    info(f"training on {len(train_set)} examples, evaluating on {len(eval_set) if eval_set else 0}")
    loss_so_far = saved_train_loss(checkpoint)  # read now: checkpoint rotation may delete it
    tokens_so_far = saved_tokens_seen(checkpoint)
    try:
        result = trainer.train(resume_from_checkpoint=checkpoint)
    except KeyboardInterrupt:
        save_interrupted(trainer, run_dir)
        raise
    if checkpoint:
        result.metrics["train_loss"] = whole_run_train_loss(result, loss_so_far, trainer.state.global_step)
    result.metrics["train_tokens_per_second"] = session_tokens_per_second(trainer, result, tokens_so_far)
    metrics = collect_metrics(config, trainer, result, eval_set, test_set, task, started)
    metrics["run"]["from_scratch"] = from_scratch_description(resolved)
    metrics.update(before)
    if trainer.is_world_process_zero():
        metrics["samples_after"] = task.samples(trainer.model)
    save_run(config, task, trainer, tokenizer, run_dir, metrics)
    leave_process_group(args, trainer)
    return metrics


# Where configs keep the attention-probabilities dropout (BERT family; DistilBERT, Llama...; GPT-2).
ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop")


def eager_attention_for_cpu_dropout(model, device) -> bool:
    """On a CPU, SDPA with attention dropout leaves its fused kernel for the generic "math"
    path, which under bf16 autocast is slower than the model's eager attention doing the same
    computation: measured +11% samples/s for minilm classification (6 of 6 alternating
    runs), +26% at 64 tokens, +10% for minilm MLM at 128 tokens; no change in fp32. Training
    only: the saved config keeps no attention choice, so inference loads SDPA as usual."""
    config = model.config
    dropout = max((getattr(config, key, 0.0) or 0.0 for key in ATTENTION_DROPOUT_KEYS), default=0.0)
    if device.type != "cpu" or dropout <= 0 or config._attn_implementation != "sdpa":
        return False
    model.set_attn_implementation("eager")
    return True


def leave_process_group(args, trainer) -> None:
    """Tear the process group down on purpose, every rank together, after rank 0 has written.

    The DDP wrapper's reducer holds the gloo group. Left to the garbage collector, the group's
    destructor ran later on one rank alone, after the other had exited, and hung there (seen
    in a 2-process test: rank 1 blocked in ~ProcessGroupGloo) or aborted at exit (SIGABRT, CI).
    So the wrapper is freed first, while every rank is still here."""
    import gc

    state = args.distributed_state
    if state is None or state.num_processes <= 1:
        return
    trainer.model_wrapped = trainer.model
    trainer.accelerator.free_memory()  # drops its prepared (wrapped) models, optimizers, loaders
    gc.collect()
    state.wait_for_everyone()
    state.destroy_process_group()


def evaluate_before(config, trainer, task, eval_set, checkpoint) -> dict[str, Any]:
    """The starting model's samples (cheap, always) and, with --eval-before, its eval
    metrics: the report then shows before/after. Skipped on resume (no longer the start)."""
    if checkpoint:
        return {}
    before: dict[str, Any] = {}
    if config.eval_before and eval_set is not None:
        info("evaluating the starting model (--eval-before)")
        before["before"] = trainer.evaluate(eval_set, metric_key_prefix="before")
    if trainer.is_world_process_zero():
        before["samples_before"] = task.samples(trainer.model)
    return before


def from_scratch_description(resolved) -> dict[str, Any] | None:
    """What `bgcli pretrain` initialised at random (its marker file), or None for a checkpoint."""
    from ..io.run_dirs import FROM_SCRATCH_MARKER

    if resolved.source != "scratch":
        return None
    return json.loads((Path(resolved.location) / FROM_SCRATCH_MARKER).read_text())


def saved_tokens_seen(checkpoint: str | None) -> int:
    """The input tokens a resumed run had seen at its checkpoint (0 for a fresh run)."""
    if not checkpoint:
        return 0
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    return state.get("num_input_tokens_seen", 0) or 0


def session_tokens_per_second(trainer, result, tokens_before: int) -> float | None:
    """Real (non-padding) input tokens per second of this session: the Trainer counts tokens
    over the whole run (resumes included) but times this session only."""
    runtime = result.metrics.get("train_runtime")
    if not runtime:
        return None
    return (trainer.state.num_input_tokens_seen - tokens_before) / runtime


TRAIN_LOSS_FILE = "bgcli_train_loss.json"


def saved_train_loss(checkpoint: str | None) -> dict[str, float] | None:
    """{step, loss_sum} kept with a checkpoint, or None (no resume, or an older checkpoint)."""
    saved = Path(checkpoint) / TRAIN_LOSS_FILE if checkpoint else None
    return json.loads(saved.read_text()) if saved is not None and saved.is_file() else None


def whole_run_train_loss(result, before: dict[str, float] | None, global_step: int) -> float:
    """The mean training loss over every step of a resumed run, as the uninterrupted run reports
    it: the loss sum kept with the checkpoint plus the Trainer's mean of the steps since."""
    segment_mean = result.metrics["train_loss"]
    if before is None:  # a checkpoint from before bgcli kept the sum
        warn("the reported train loss covers only the steps since the resume")
        return segment_mean
    total = before["loss_sum"] + segment_mean * (global_step - before["step"])
    return total / max(global_step, 1)


def resume_checkpoint(resume: str | None, run_dir: Path) -> str | None:
    if not resume:
        return None
    if resume == "auto":
        last = last_complete_checkpoint(run_dir)
        if last is None:
            raise UsageError(f"no checkpoint in {run_dir} to resume from; drop --resume to start over")
        info(f"resuming from {last}")
        return last
    if not (Path(resume) / "trainer_state.json").is_file():
        raise UsageError(f"'{resume}' is not a checkpoint dir (no trainer_state.json); use --resume auto")
    return resume


def save_interrupted(trainer, run_dir: Path) -> None:
    """Ctrl-C: keep what was learned as a normal checkpoint and say how to go on."""
    from ..io.console import error

    step = trainer.state.global_step
    if step == 0:
        error("interrupted before the first step; nothing to save")
        return
    # Trainer has no public "checkpoint now"; _save_checkpoint writes model, optimizer,
    # scheduler, RNG and trainer state exactly as a scheduled save does.
    trainer._save_checkpoint(trainer.model, trial=None)
    if trainer.is_world_process_zero():
        error(f"interrupted at step {step}; checkpoint saved. Resume with:\n  {resume_command(run_dir)}")


def write_config(config, run_dir: Path) -> None:
    import yaml

    values = {**recipe_values(config), "output": str(run_dir)}
    write_text_atomically(run_dir / RUN_CONFIG, yaml.safe_dump(values, sort_keys=False))


def load_splits(config, task):
    def load(spec: str):
        return load_data(spec, config.data_format, config.tag_column, task.documents_per_paragraph)

    train = load(config.train_data)
    others = {}
    if config.eval_data:
        others["eval"] = load(config.eval_data)
    if config.test_data:
        others["test"] = load(config.test_data)
    warn_shared_rows(config, train, others)
    train, others = task.prepare(train, others)
    eval_set = others.get("eval")
    if eval_set is None and config.eval_split > 0:
        check_eval_split(config.eval_split, len(train), task.documents_per_paragraph)
        # Split records before any packing, so no text lands in both parts.
        train, eval_set = task.split(train, config.eval_split, config.seed)
    if config.max_train_samples and not task.limits_records:
        train = train.shuffle(seed=config.seed).select(range(min(config.max_train_samples, len(train))))
    if eval_set is not None and config.max_eval_samples:
        eval_set = eval_set.select(range(min(config.max_eval_samples, len(eval_set))))
    test_set = others.get("test")
    return (
        task.finalize(train, "train"),
        task.finalize(eval_set, "eval") if eval_set is not None else None,
        task.finalize(test_set, "test") if test_set is not None else None,
    )


def check_eval_split(fraction: float, records: int, documents: bool) -> None:
    """Both parts of the split must hold a record (the datasets split rounds the held-out part
    up), or one line naming the way out instead of the library's traceback."""
    import math

    held_out = math.ceil(fraction * records)
    if 0 < held_out < records:
        return
    what = "documents (blank-line paragraphs of a text file, or records)" if documents else "training records"
    raise UsageError(
        f"--eval-split {fraction} of {records} {what} leaves "
        f"{'nothing to train on' if held_out >= records else 'nothing to evaluate'}; "
        "give more data, --eval-data FILE, or --eval-split 0"
    )


def warn_shared_rows(config, train, others) -> None:
    """`bgcli data check`'s blocking checks that cost nothing next to training: test (or eval)
    rows that are also training rows make the reported score wrong. Rank 0 says it once."""
    from .data_check import blocking_overlap_warnings

    if int(os.environ.get("RANK", "0")) == 0:
        for message in blocking_overlap_warnings(config, train, others):
            warn(f"{message} (bgcli data check shows more)")


def best_metric(config, task) -> tuple[str, bool]:
    """The metric that picks the best checkpoint, and whether greater is better."""
    metric = config.metric or task.default_metric
    return metric, not metric.endswith(("loss", "perplexity"))


def pick_precision(config) -> str:
    import torch

    if config.precision != "auto":
        return config.precision
    if config.device != "cpu" and torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    # CPU with native bf16 units: bf16 autocast trains rt-minilm 1.5x faster at the same test
    # accuracy (83.9% vs 83.8% fp32, README). Without them bf16 is emulated: keep fp32.
    return "bf16" if cpu_bf16_units() and config.device in ("auto", "cpu") else "fp32"


def training_arguments(config, task, run_dir: Path):
    """The Trainer's settings; `task` may be the task class (only its defaults are read)."""
    from transformers import TrainingArguments

    precision = pick_precision(config)
    by_epoch = config.eval_every == "epoch"
    strategy = "epoch" if by_epoch else "steps"
    has_eval = bool(config.eval_data) or config.eval_split > 0  # as load_splits decides
    metric, greater_is_better = best_metric(config, task)
    settings = dict(
        output_dir=str(run_dir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.lr,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size * 2,
        gradient_accumulation_steps=config.grad_accum,
        warmup_steps=config.warmup,
        weight_decay=config.weight_decay,
        lr_scheduler_type=config.scheduler,
        seed=config.seed,
        data_seed=config.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=config.device == "cpu" or not _has_accelerator(),
        eval_strategy=strategy if has_eval else "no",
        save_strategy=strategy,
        eval_steps=None if by_epoch else int(config.eval_every),
        save_steps=None if by_epoch else int(config.eval_every),
        save_total_limit=config.save_total_limit,
        load_best_model_at_end=bool(config.early_stopping) and has_eval,
        metric_for_best_model=metric if has_eval else None,
        greater_is_better=greater_is_better,
        logging_steps=10,
        report_to=config.report_to,
        run_name=config.run_name or run_dir.name,
        project=config.tracking_project or run_dir.resolve().parent.name,
        disable_tqdm=True,
        train_sampling_strategy="group_by_length",
        average_tokens_across_devices=False,
        include_num_input_tokens_seen="non_padding",  # real tokens/s, for the MFU in the report
        # One fused kernel instead of a dozen foreach passes over every parameter: AdamW was a
        # third of a minilm classification step on 2 CPU cores; fused is ~5-8% faster per step.
        optim="adamw_torch_fused",
        activation_checkpointing=config.gradient_checkpointing,  # transformers 5's name for it
        # Non-reentrant: frozen inputs (LoRA) need no enable_input_require_grads hack.
        activation_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        ddp_find_unused_parameters=False,
        dataloader_pin_memory=config.device != "cpu" and _has_accelerator(),
        # Tasks keep only the columns their collator needs (the MLM collator reads
        # special_tokens_mask / offset_mapping, which the model's forward does not take).
        remove_unused_columns=False,
    )
    try:
        return TrainingArguments(**settings)
    except ValueError as exc:  # an impossible combination, e.g. fp16 without a GPU
        raise UsageError(f"invalid training setup: {first_line(exc)}") from exc


def current_rss_mb() -> float | None:
    """This process's resident memory now (Linux /proc), None elsewhere."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def memory_log_callback():
    """RSS in every log line of the history (log_history.jsonl, the report's plots): where a run's
    memory goes, step by step."""
    from transformers import TrainerCallback

    class MemoryLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            rss = current_rss_mb()
            if rss is not None and state.log_history:
                state.log_history[-1]["rss_mb"] = rss

    return MemoryLog()


def checkpoint_modes_callback():
    """Checkpoints get the umask's modes too (the Trainer's safetensors files are 0600)."""
    from transformers import TrainerCallback

    class CheckpointModes(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and checkpoint.is_dir():
                apply_umask(checkpoint)

    return CheckpointModes()


def build_trainer(config, task, model, tokenizer, args, train_set, eval_set):
    from transformers import EarlyStoppingCallback, PrinterCallback

    has_eval = eval_set is not None
    callbacks = [EarlyStoppingCallback(config.early_stopping)] if config.early_stopping and has_eval else []
    callbacks += [checkpoint_modes_callback(), memory_log_callback()]
    if not VERBOSITY.quiet:
        from ..io.progress import RichProgressCallback

        callbacks.append(RichProgressCallback())
    if config.class_weights == "auto":  # classification only: validate() refused it for the others
        task.use_class_weights(train_set)
    trainer = trainer_class(task)(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        data_collator=task.collator(),
        compute_metrics=task.compute_metrics(),
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # it prints log dicts on stdout, which is for data
    return trainer


def _has_accelerator() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return torch.cuda.is_available() or bool(mps and mps.is_available())


def rounded_length(length: int) -> int:
    """A multiple of 8 tokens (16 past 128): few distinct batch shapes, little extra padding."""
    step = 8 if length <= 128 else 16
    return -(-length // step) * step


class RoundedLengths:
    """Training batches padded to `rounded_length`. Length-grouped batches of every length from
    1 to 512 gave oneDNN and the allocator hundreds of distinct shapes, and the process kept
    growing with them (squad-minilm: 4.6 GB at step 10, 8.5 GB at step 220, 16.4 GB at the end);
    with a few dozen shapes memory levels off after the first steps. Padded positions are
    masked (and -100 for labels), so the loss is the same; eval batches are left as they are."""

    def __init__(self, collate, tokenizer) -> None:
        self.collate = collate
        self.pad_id = getattr(tokenizer, "pad_token_id", None) or 0

    def __call__(self, features):
        import torch

        batch = self.collate(features)
        ids = batch.get("input_ids") if hasattr(batch, "get") else None
        if not torch.is_tensor(ids) or ids.dim() != 2:
            return batch
        extra = rounded_length(ids.shape[1]) - ids.shape[1]
        if extra == 0:
            return batch
        mask = batch.get("attention_mask")
        # Pad on the side the collator padded (left only when every row ends with a real token).
        left = torch.is_tensor(mask) and bool((mask[:, 0] == 0).any()) and bool((mask[:, -1] == 1).all())
        shape = ids.shape
        for key, value in list(batch.items()):
            if torch.is_tensor(value) and value.shape == shape:
                fill = self.pad_id if key == "input_ids" else -100 if "labels" in key else 0
                batch[key] = torch.nn.functional.pad(value, (extra, 0) if left else (0, extra), value=fill)
        return batch


def trainer_class(task):
    """The Trainer with two changes: an epoch-seeded length-grouped sampler (so a resumed
    run sees exactly the batches of an uninterrupted one), and the task's own loss and eval
    step where it has them (class-weighted loss; MLM projecting masked positions only)."""
    import torch
    from transformers import Trainer
    from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

    class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
        # Stock: the order comes from the global RNG at iteration time, which a resumed run
        # cannot replay mid-epoch (its RNG is restored only after the order is drawn).
        def __init__(self, base: LengthGroupedSampler, seed: int):
            self.__dict__.update(base.__dict__)
            self.seed, self.epoch = seed, 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __iter__(self):
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))

    class EpochOrderSampler(torch.utils.data.Sampler):
        """The task's order for each epoch (seeded by the epoch, so a resumed run replays it)."""

        def __init__(self, order, size: int):
            self.order, self.size, self.epoch = order, size, 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __len__(self) -> int:
            return self.size

        def __iter__(self):
            return iter(self.order(self.epoch))

    class BgcliTrainer(Trainer):
        def get_train_dataloader(self):
            collate = self.data_collator
            self.data_collator = RoundedLengths(collate, self.processing_class)
            try:
                return super().get_train_dataloader()
            finally:
                self.data_collator = collate

        def _get_train_sampler(self, train_dataset=None):
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            if task.orders_batches:  # the task fills the batches itself (embedding: no duplicates)
                size = self.args.per_device_train_batch_size
                return EpochOrderSampler(
                    lambda epoch: task.batch_order(dataset, size, seed + epoch), len(dataset)
                )
            sampler = super()._get_train_sampler(train_dataset)
            if isinstance(sampler, LengthGroupedSampler):
                return EpochSeededLengthGroupedSampler(sampler, seed)
            return sampler

        def _get_eval_sampler(self, eval_dataset):
            if task.ordered_eval and self.args.world_size <= 1:
                from torch.utils.data import SequentialSampler

                return SequentialSampler(eval_dataset)
            # Distributed: no sampler, so accelerate shards batches in order and gathers them back.
            return None if task.ordered_eval else super()._get_eval_sampler(eval_dataset)

        def _save_checkpoint(self, model, trial):
            # The Trainer restarts its loss sum on resume, so a resumed run would report the
            # mean loss of its last segment only; keep the sum so far with the checkpoint,
            # written before the Trainer's own files (trainer_state.json, last, marks it complete).
            if self.is_world_process_zero():
                folder = Path(self._get_output_dir(trial)) / f"checkpoint-{self.state.global_step}"
                loss_sum = self._total_loss_scalar + self._tr_loss.item()
                so_far = {"step": self.state.global_step, "loss_sum": loss_sum}
                write_text_atomically(folder / TRAIN_LOSS_FILE, json.dumps(so_far) + "\n")
            super()._save_checkpoint(model, trial)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not return_outputs:
                if not self.model_accepts_loss_kwargs:
                    num_items_in_batch = None  # the Trainer then divides by --grad-accum itself
                loss = task.compute_loss(model, inputs, num_items_in_batch)
                if loss is not None:
                    return loss
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            inputs = self._prepare_inputs(inputs)
            with torch.no_grad(), self.compute_loss_context_manager():
                step = task.prediction_step(model, inputs)
            if step is None:
                return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
            loss, predictions, labels = step
            return (
                (loss.detach(), None, None) if prediction_loss_only else (loss.detach(), predictions, labels)
            )

    return BgcliTrainer


def final_evaluation(trainer) -> dict[str, Any] | None:
    """The Trainer already evaluated the final weights when its last evaluation fell on the
    last step (and no best checkpoint was loaded after it): reuse it instead of a second pass."""
    state = trainer.state
    evals = [h for h in state.log_history if "eval_loss" in h]
    if not evals or evals[-1].get("step") != state.global_step or trainer.args.load_best_model_at_end:
        return None
    return {k: v for k, v in evals[-1].items() if k.startswith("eval_") or k == "epoch"}


def collect_metrics(config, trainer, result, eval_set, test_set, task, started: float) -> dict[str, Any]:
    import torch

    metrics: dict[str, Any] = {"train": dict(result.metrics)}
    if eval_set is not None:
        task.evaluating("eval")
        metrics["eval"] = final_evaluation(trainer) or trainer.evaluate(eval_set, metric_key_prefix="eval")
    if test_set is not None:
        task.evaluating("test")
        prediction = trainer.predict(test_set, metric_key_prefix="test")
        metrics["test"] = dict(prediction.metrics)
        report = task.test_report(prediction)
        if report:
            metrics["test_report"] = report
    args = trainer.args
    metrics["run"] = {
        "wall_time_s": round(time.time() - started, 1),
        "train_samples_per_second": result.metrics.get("train_samples_per_second"),
        "peak_memory_mb": peak_memory_mb(),
        "device": str(args.device),
        "precision": pick_precision(config),
        "world_size": args.world_size,
        "attention": trainer.model.config._attn_implementation,
        "torch_threads": torch.get_num_threads(),
        "task": task.name,
        **task.run_info(),
        **parameter_counts(trainer.model, config),
    }
    if trainer.is_world_process_zero():
        from .flops import training_mfu

        tokens_per_second = result.metrics.get("train_tokens_per_second")
        metrics["run"].update(training_mfu(trainer.model, task.projected_share, tokens_per_second, args))
    return metrics


def parameter_counts(model, config) -> dict[str, Any]:
    """Trained parameters and their share (the report's LoRA line; 100% without --lora)."""
    from .lora import trainable_parameters

    trainable, total = trainable_parameters(model)
    counts: dict[str, Any] = {
        "trainable_parameters": trainable,
        "trainable_share": round(trainable / total, 6),
    }
    if config.lora:
        counts["lora"] = {
            "r": config.lora_r,
            "alpha": config.lora_alpha,
            "dropout": config.lora_dropout,
            "targets": config.lora_targets,
            "adapter_only": config.save_adapter_only,
        }
    return counts


def peak_memory_mb() -> float:
    import resource

    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def save_model_files(config, trainer, folder: Path) -> None:
    """The weights: as trained, or with --lora adapter/ plus the merged model (loads anywhere,
    no peft needed); --save-adapter-only keeps the config but no merged weights."""
    from .lora import is_lora_model, save_adapter

    if not is_lora_model(trainer.model):
        trainer.save_model(str(folder))
        return
    save_adapter(trainer.model, folder, config.model)
    plain = trainer.model.merge_and_unload()  # adapters folded into the weights
    if config.save_adapter_only:
        plain.config.architectures = [type(plain).__name__]  # what save_pretrained would record
        plain.config.save_pretrained(str(folder))
    else:
        plain.save_pretrained(str(folder))


def remove_stale_weights(run_dir: Path, written: set[str]) -> None:
    """An --overwrite run replaces the weights of the run before it: merged weights beside a
    new adapter-only save would be loaded instead of it, and an old adapter/ would describe
    another model. Only these names, which bgcli writes, are touched."""
    import shutil

    for path in run_dir.iterdir():
        weights = path.name.startswith("model") and path.name.endswith(
            (".safetensors", ".safetensors.index.json")
        )
        if path.name in written or not (weights or path.name == "adapter"):
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    for name in written:  # a folder cannot be renamed over a non-empty one
        if (run_dir / name).is_dir():
            shutil.rmtree(run_dir / name)


def save_run(config, task, trainer, tokenizer, run_dir: Path, metrics: dict[str, Any]) -> None:
    """Only rank 0 writes. Model files land atomically one by one; metrics.json, written
    last, marks the run finished."""

    if not trainer.is_world_process_zero():
        return
    final = run_dir / FINAL_TEMP
    try:
        save_model_files(config, trainer, final)
        tokenizer.save_pretrained(str(final))
        task.save_files(final)
        (final / "training_args.bin").unlink(missing_ok=True)  # a pickle; checkpoints keep theirs
        apply_umask(final)
        remove_stale_weights(run_dir, {item.name for item in final.iterdir()})
        for item in final.iterdir():
            os.replace(item, run_dir / item.name)
        final.rmdir()
    except BaseException:
        remove_failed_save(run_dir)  # never leave a model's worth of temp bytes behind
        raise
    history = "".join(json.dumps(entry) + "\n" for entry in trainer.state.log_history)
    write_text_atomically(run_dir / "log_history.jsonl", history)
    from .run_report import write_report

    write_report(run_dir, config, task, metrics, trainer.state.log_history)
    write_text_atomically(run_dir / "metrics.json", json.dumps(metrics, indent=2, default=str) + "\n")
    info(f"model and report written to {run_dir}")
