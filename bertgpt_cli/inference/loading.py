"""Shared inference plumbing for fill-mask / generate / classify: device and precision
choice, model loading, and length-sorted batches that are written back in input order."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from ..errors import UsageError
from ..io.console import info, warn
from ..models.onnx import export_info
from ..models.resolution import (
    check_tokenizer_fits_model,
    is_head_weight,
    load_config,
    load_model,
    load_tokenizer,
    resolve_model_options,
)
from ..options import ModelOptions, option

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
# Measured (docs/performance.md): what int8 keeps of fp32's answers on trained models.
INT8_WARNING = (
    "int8 changes answers: a trained minilm classifier kept 97.3% of its fp32 labels, a masked LM "
    "77% of its top-1 predictions; prefer --precision bf16 where the CPU has bf16 units"
)


@dataclasses.dataclass
class InferenceOptions:
    batch_size: int = option(32, "Texts per forward pass.", panel="Speed", ge=1)
    device: str = option(
        "auto", "auto (CUDA > MPS > CPU), cpu, cuda, cuda:N or mps.", panel="Speed", metavar="DEVICE"
    )
    precision: str = option(
        "auto",
        "Weights dtype. auto: fp32 on CPU (exact answers), bf16 on a GPU that has it. "
        "int8: dynamic int8 linear layers (CPU only; faster, answers may change). "
        "fp16 on a CPU is ~100x slower: never chosen there.",
        choices=PRECISIONS,
        panel="Speed",
    )


def pick_device(spec: str):
    import torch

    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise UsageError(f"unknown --device '{spec}'; use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda but no CUDA GPU is visible; use --device cpu (or auto)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps but MPS is not available; use --device cpu (or auto)")
    return device


def pick_dtype(precision: str, device):
    import torch

    if precision in ("fp32", "int8"):  # int8: loaded in fp32, then quantized (see quantize_int8)
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type == "cpu":
            warn("fp16 on a CPU is ~100x slower than fp32; prefer --precision bf16 or fp32")
        return torch.float16
    # auto: CPU bf16 changes answers (see README: agreement with fp32), so stay exact there.
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_for_inference(
    model_options: ModelOptions,
    speed: InferenceOptions,
    auto_class: Any,
    task: str,
    check: Callable[[Any, Any], None] | None = None,
    tokenizer_kwargs: dict | None = None,
    trained_by: str = "bgcli finetune",
    ignore_missing: tuple[str, ...] = (),
    resolved: Any = None,
):
    """Resolve, check the model can do `task`, load tokenizer + weights on the chosen device.
    `trained_by` is the command that makes such a model, named when the weights are missing;
    weights starting with `ignore_missing` may be missing (never used for this task)."""
    resolved = resolved or resolve_model_options(model_options)
    config = load_config(resolved)
    if check is not None:
        check(resolved, config)
    device = pick_device(speed.device)
    dtype = pick_dtype(speed.precision, device)
    tokenizer = load_tokenizer(resolved, **(tokenizer_kwargs or {}))
    check_tokenizer_fits_model(resolved, tokenizer, config)
    exported = export_info(resolved.location) if resolved.source != "hub" else None
    if exported is not None:
        return load_exported(resolved, config, exported, auto_class, speed, task), tokenizer
    model, loading = load_model(
        resolved, auto_class, task, config=config, dtype=dtype, output_loading_info=True
    )
    missing = [k for k in loading.get("missing_keys") or () if not k.startswith(ignore_missing)]
    refuse_random_weights(resolved.spec, task, missing, model, trained_by)
    model.to(device).eval()
    if speed.precision == "int8":
        model = quantize_int8(model, device)
        warn(INT8_WARNING)
    shown = "int8 linear layers" if speed.precision == "int8" else str(dtype).removeprefix("torch.")
    info(f"{task}: {resolved.spec} on {device} ({shown})")
    return model, tokenizer


def load_exported(resolved, config, exported: dict, auto_class, speed, task: str):
    """A `bgcli export` dir: onnxruntime on the CPU, at the precision it was exported with."""
    from ..models.onnx import OnnxModel

    if speed.precision not in ("auto", "fp32") or speed.device not in ("auto", "cpu"):
        warn(
            "an ONNX export runs on the CPU at the precision it was exported with; "
            "--precision and --device are ignored"
        )
    model = OnnxModel(resolved.location, config, exported, getattr(auto_class, "__name__", str(auto_class)))
    quantized = " int8" if exported.get("quantize") == "int8" else ""
    info(f"{task}: {resolved.spec} with onnxruntime{quantized} on cpu")
    return model


def quantize_int8(model, device):
    """torch's dynamic quantization of every nn.Linear: int8 weights with a scale per output
    channel, activations quantized per batch. CPU only; the answers can change (docs/performance.md:
    one scale per channel kept 97.3% of a trained classifier's labels, one per matrix 93.7%)."""
    import warnings

    import torch

    if device.type != "cpu":
        raise UsageError("--precision int8 runs on a CPU only; use --device cpu, or bf16 on a GPU")
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao
        warnings.simplefilter("ignore")
        per_channel = {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}
        return torch.ao.quantization.quantize_dynamic(model, per_channel, dtype=torch.qint8)


def padded_batch(tokenizer, encoded, rows: list[int], device) -> dict:
    """Rows of a tokenizer output (windows of different lengths) as right-padded model inputs
    on `device`; offsets, special-token masks and other extras stay behind."""
    inputs = [
        name for name in tokenizer.model_input_names if name in encoded and name != "special_tokens_mask"
    ]
    features = [{name: encoded[name][i] for name in inputs} for i in rows]
    padded = tokenizer.pad(features, padding=True, return_tensors="pt", padding_side="right")
    return {k: v.to(device) for k, v in padded.items()}


def refuse_random_weights(spec: str, task: str, missing: Iterable[str], model: Any, trained_by: str) -> None:
    """transformers fills weights missing from a checkpoint with random values and goes on;
    at inference that gives confident-looking noise (fill-mask on a bare encoder such as minilm,
    whose checkpoint has no MLM head), so it is one clear line instead. Head weights (e.g.
    "cls.predictions.bias") are named first: they tell why."""
    missing = sorted(missing, key=lambda key: (not is_head_weight(key, model), key))
    if missing:
        more = f" and {len(missing) - 1} more weights" if len(missing) > 1 else ""
        raise UsageError(
            f"model '{spec}' has no trained weights for {task} ({missing[0]}{more} not in the "
            f"checkpoint: they would be random); pass a model trained for {task}, or train one "
            f"with `{trained_by}`"
        )


# What one more forward pass costs, in padded tokens (minilm on 2 cores: 32-128 measured alike).
BATCH_OVERHEAD_TOKENS = 64


def length_sorted(
    indices: Sequence[int], lengths: Sequence[int], batch_size: int, split_by_padding: bool = False
) -> Iterator[list[int]]:
    """Batches of indices with similar lengths (longest first), to cut padding. With
    `split_by_padding`, batch boundaries are chosen to cost the fewest padded tokens plus
    BATCH_OVERHEAD_TOKENS per forward pass: a few records of mixed lengths (a server's batch
    of 32 single-text requests) run as a few shorter batches instead of one padded to the
    longest (measured: 1.5x sentences/s on RT sentences with minilm)."""
    order = sorted(indices, key=lambda i: -lengths[i])
    if not split_by_padding:
        for start in range(0, len(order), batch_size):
            yield order[start : start + batch_size]
        return
    yield from (order[start:end] for start, end in _cheapest_split([lengths[i] for i in order], batch_size))


def _cheapest_split(descending: list[int], batch_size: int) -> list[tuple[int, int]]:
    """Dynamic programming over the sorted lengths: best[j] = the cheapest way to run the first
    j records, each batch costing rows x its longest + the per-pass overhead."""
    n = len(descending)
    best, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)
    for end in range(1, n + 1):
        for start in range(max(0, end - batch_size), end):
            cost = best[start] + (end - start) * descending[start] + BATCH_OVERHEAD_TOKENS
            if cost < best[end]:
                best[end], cut[end] = cost, start
    spans, end = [], n
    while end:
        spans.append((cut[end], end))
        end = cut[end]
    return spans[::-1]


def process_sorted(
    lengths: Sequence[int],
    batch_size: int,
    run_batch: Callable[[list[int]], list],
    split_by_padding: bool = True,
) -> list:
    """Run `run_batch` on length-sorted batches of record indices; results in input order.

    `run_batch` returns one result per index: a list of output dicts or a RecordError.
    """
    results: list = [None] * len(lengths)
    for batch in length_sorted(range(len(lengths)), lengths, batch_size, split_by_padding):
        for index, result in zip(batch, run_batch(batch), strict=True):
            results[index] = result
    return results


def model_max_length(tokenizer: Any, model: Any) -> int:
    """The smaller of the tokenizer's limit and the model's position embeddings."""
    limits = [getattr(tokenizer, "model_max_length", None)]
    limits.append(getattr(model.config, "max_position_embeddings", None))
    limits.append(getattr(model.config, "n_positions", None))
    usable = [x for x in limits if isinstance(x, int) and 0 < x < 1_000_000]
    return min(usable) if usable else 512
