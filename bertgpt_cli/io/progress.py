"""A Rich progress bar on stderr for the Trainer (loss, lr, samples/s, ETA) instead of tqdm."""

from __future__ import annotations

import time

from transformers import TrainerCallback

from .console import err_console


class RichProgressCallback(TrainerCallback):
    def __init__(self):
        self.progress = None
        self.task = None
        self.started = 0.0
        self.samples_per_step = 1

    def on_train_begin(self, args, state, control, **kwargs):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        if not state.is_world_process_zero:
            return
        self.samples_per_step = (
            args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        )
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            console=err_console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=state.max_steps, stats="")
        self.started = time.time()

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress is None or not logs:
            return
        if "loss" in logs:
            rate = state.global_step * self.samples_per_step / max(time.time() - self.started, 1e-9)
            stats = f"loss {logs['loss']:.4f}  lr {logs.get('learning_rate', 0):.2e}  {rate:.1f} samples/s"
            self.progress.update(self.task, stats=stats)
        elif any(k.startswith("eval_") for k in logs):
            shown = {
                k[5:]: v
                for k, v in logs.items()
                if k.startswith("eval_")
                and isinstance(v, float)
                and not k.endswith(("runtime", "per_second", "preparation_time"))
            }
            self.progress.console.print("eval  " + "  ".join(f"{k} {v:.4f}" for k, v in shown.items()))

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
