"""Export (`bgcli export`, `api.export`): a model dir as ONNX (torch.onnx.export, dynamic batch
and sequence axes), optionally int8 (onnxruntime's dynamic quantization), with its tokenizer
and config, checked against PyTorch before it is written. classify, fill-mask and embed run the result through
onnxruntime (`-m OUT`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..io.console import info, warn
from ..options import OutputOptions, option
from .heads import EXPORT_TASKS, detect_task, head_for, require_head

PANEL = "Export"
TASK_CHOICES = ("auto", *EXPORT_TASKS)
CHECK_TEXTS = (
    "a gorgeous, witty movie",
    "the plot was dull and the acting was worse, though the music saved a few scenes",
    "paris",
)
FP32_TOLERANCE = 1e-4


@dataclass
class ExportConfig(OutputOptions):
    model: str | None = option(
        None, "The model: a run dir, Hub id or alias.", short="-m", metavar="MODEL", panel=PANEL
    )
    output: str | None = option(None, "The export dir to write.", short="-o", metavar="DIR", panel=PANEL)
    format: str = option("onnx", "Export format.", choices=("onnx",), panel=PANEL)
    quantize: str = option(
        "none",
        "int8: onnxruntime dynamic quantization of the weights (smaller, faster on a CPU; "
        "answers may change).",
        choices=("none", "int8"),
        panel=PANEL,
    )
    task: str = option(
        "auto",
        "What the exported graph computes. auto: from the model's head (a bare encoder: feature-extraction).",
        choices=TASK_CHOICES,
        panel=PANEL,
    )
    opset: int = option(17, "ONNX opset version.", panel=PANEL, ge=14)
    optimize: bool = option(
        False,
        "Fuse attention, LayerNorm and GELU with onnxruntime's transformer optimizer (checked like the "
        "plain graph; kept only if it still matches PyTorch). Measure it on your CPU: on an AMX Xeon "
        "it was slower than the plain graph.",
        panel=PANEL,
    )
    overwrite: bool = option(False, "Replace an earlier export in --output.", panel=PANEL)
    offline: bool = option(False, "Never touch the network.", panel="Model")


CONFIG = ExportConfig


def run(config: ExportConfig) -> Path:
    """Export, check against PyTorch, write atomically: the export dir."""
    if not config.model:
        raise UsageError("pass the model to export with --model/-m")
    if not config.output:
        raise UsageError("pass the export dir with --output/-o")
    target = check_target(Path(config.output), config.overwrite)
    from .onnx import onnxruntime_version

    if onnxruntime_version() is None:
        raise UsageError("exporting checks the result with onnxruntime: pip install 'bertgpt-cli[onnx]'")
    import transformers

    from ..io.atomic import save_dir_atomically
    from .resolution import load_config, load_model, load_tokenizer, resolve_model

    resolved = resolve_model(config.model, offline=config.offline)
    model_config = load_config(resolved)
    task = config.task
    if task == "auto":
        try:
            task = detect_task(model_config, {})
        except UsageError:
            task = "feature-extraction"
    if task == "clm":
        raise UsageError("causal LMs are not exported (generation needs past key values); export encoders")
    if task != "feature-extraction":  # a head the model lacks would be exported random
        remedy = "export it with --task auto (its own head) or feature-extraction"
        require_head(resolved, model_config, task, remedy)
    head = head_for(task)
    class_name, outputs = head.auto_class, list(head.onnx_outputs)
    tokenizer = load_tokenizer(resolved)
    # eager attention: the plain MatMul-Softmax-MatMul pattern onnxruntime's optimizer fuses into one
    # Attention kernel (SDPA traces to a form it does not recognise); same outputs.
    model_config._attn_implementation = "eager"
    model = load_model(resolved, getattr(transformers, class_name), task, config=model_config).eval()

    def write(folder: Path) -> None:
        graph = folder / "model.onnx"
        export_graph(model, tokenizer, graph, outputs, config.opset)
        fused = fuse_transformer_ops(model, tokenizer, graph, outputs) if config.optimize else {}
        if config.quantize == "int8":
            quantize_onnx_int8(graph)
        tokenizer.save_pretrained(folder)
        model.config.save_pretrained(folder)
        copy_pooling_config(resolved, folder)
        check = check_export(model, tokenizer, graph, outputs, config.quantize)
        record = {
            "task": task,
            "format": "onnx",
            "quantize": config.quantize,
            "opset": config.opset,
            "fused_ops": fused,
            "file": "model.onnx",
            "source": config.model,
            "check": check,
        }
        import json

        (folder / "bgcli_export.json").write_text(json.dumps(record, indent=2) + "\n")

    save_dir_atomically(target, write)
    size = (target / "model.onnx").stat().st_size / 2**20
    info(f"exported {config.model} ({task}) to {target}: model.onnx {size:.1f} MB")
    return target


def copy_pooling_config(resolved, folder: Path) -> None:
    """A sentence-transformers model's pooling files, so `bgcli embed -m EXPORT` pools as before."""
    import json
    import shutil

    from .resolution import model_file

    modules = model_file(resolved, "modules.json")
    if modules is None:
        return
    names = ["modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"]
    for module in json.loads(modules.read_text()):
        if module.get("path"):
            names.append(f"{module['path']}/config.json")
    for name in names:
        source = model_file(resolved, name)
        if source is not None:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, folder / name)


def check_target(target: Path, overwrite: bool) -> Path:
    """A new folder, or an earlier export with --overwrite: never someone else's files."""
    if target.exists():
        if not (target / "bgcli_export.json").is_file():
            raise UsageError(f"--output '{target}' exists and is not a bgcli export; name a new folder")
        if not overwrite:
            raise UsageError(f"--output '{target}' holds an export; pass --overwrite to replace it")
    return target


def sample_inputs(tokenizer):
    return tokenizer(list(CHECK_TEXTS), padding=True, return_tensors="pt")


def export_graph(model, tokenizer, path: Path, outputs: list[str], opset: int) -> None:
    """torch.onnx.export (the TorchScript exporter: one graph with dynamic batch and sequence)."""
    import warnings

    import torch

    inputs = sample_inputs(tokenizer)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in inputs]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    per_text = type(model).__name__.endswith("ForSequenceClassification")  # one row of logits per text
    axes |= {o: {0: "batch"} if per_text else {0: "batch", 1: "sequence"} for o in outputs}

    class Wrapped(torch.nn.Module):  # positional inputs in, the named outputs out
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            result = self.inner(**dict(zip(names, args, strict=True)))
            return tuple(getattr(result, o) for o in outputs)

    # .eval() on the wrapper too: the exporter traces in the top module's mode, and a wrapper left
    # in training mode put the model's dropout into the graph (outputs off by ~2).
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Wrapped(model).eval(),
            tuple(inputs[n] for n in names),
            str(path),
            input_names=names,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )


def fuse_transformer_ops(model, tokenizer, path: Path, outputs: list[str]) -> dict[str, int]:
    """onnxruntime's transformer optimizer: the attention block, LayerNorm (+ residual), GELU
    (+ bias) and the embeddings each become one fused CPU kernel instead of dozens of small ops.
    Its BERT patterns are matched, not assumed: an encoder it does not know keeps its plain ops
    and a fused graph that no longer matches PyTorch is dropped for the plain one."""
    import contextlib
    import io

    from onnxruntime.transformers.fusion_options import AttentionMaskFormat, FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    # The 2-D mask as given, not its default of per-row lengths, which assumes right padding.
    options.attention_mask_format = AttentionMaskFormat.AttentionMask
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its progress
        optimized = optimize_model(
            str(path),
            model_type="bert",
            num_heads=getattr(model.config, "num_attention_heads", 0),
            hidden_size=getattr(model.config, "hidden_size", 0),
            optimization_options=options,
        )
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    if not fused:
        return {}
    candidate = path.with_name("model.fused.onnx")
    optimized.save_model_to_file(str(candidate))
    largest, _ = compare_with_pytorch(model, tokenizer, candidate, outputs)
    if largest > FP32_TOLERANCE:
        candidate.unlink()
        warn(f"kept the unfused graph: the fused one differs from PyTorch by {largest:.2e}")
        return {}
    candidate.replace(path)
    info("fused " + ", ".join(f"{k} x{n}" for k, n in sorted(fused.items())))
    return fused


def quantize_onnx_int8(path: Path) -> None:
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = path.with_name("model.int8.onnx")
    # It logs advice to run its own pre-processing (shape inference, graph fusion) first: for
    # fusion bgcli offers --optimize; the advice is not the user's business on every export.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        # Fused ops (com.microsoft domain) defeat its type inference for the tensors they feed.
        defaults = {"DefaultTensorType": onnx.TensorProto.FLOAT}
        # A scale per output channel: on a trained minilm classifier it kept 98.2% of the labels
        # (one scale per matrix: 95.6%) at the same speed.
        quantize_dynamic(
            str(path),
            str(quantized),
            weight_type=QuantType.QInt8,
            per_channel=True,
            extra_options=defaults,
        )
    finally:
        root.setLevel(level)
    quantized.replace(path)


def compare_with_pytorch(model, tokenizer, graph: Path, outputs: list[str]) -> tuple[float, bool]:
    """Largest absolute difference from PyTorch's outputs on CHECK_TEXTS, and whether every argmax
    is the same."""
    import numpy as np
    import onnxruntime
    import torch

    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    inputs = sample_inputs(tokenizer)
    feed = {i.name: inputs[i.name].numpy() for i in session.get_inputs()}
    ours = session.run(outputs, feed)
    with torch.no_grad():
        reference = model(**inputs)
    largest, agree = 0.0, True
    for name, value in zip(outputs, ours, strict=True):
        expected = getattr(reference, name).numpy()
        largest = max(largest, float(np.abs(value - expected).max()))
        agree = agree and bool((value.argmax(-1) == expected.argmax(-1)).all())
    return largest, agree


def check_export(model, tokenizer, graph: Path, outputs: list[str], quantize: str) -> dict:
    """The exported graph against PyTorch: fp32 must match to FP32_TOLERANCE; int8 is reported
    (largest difference, argmax agreement), not refused."""
    largest, agree = compare_with_pytorch(model, tokenizer, graph, outputs)
    if quantize == "none" and largest > FP32_TOLERANCE:
        raise UsageError(
            f"the exported graph differs from PyTorch by {largest:.2e} (> {FP32_TOLERANCE}); not written"
        )
    info(
        f"check on {len(CHECK_TEXTS)} texts: largest difference {largest:.2e}, "
        f"argmax {'equal' if agree else 'differs'}"
    )
    return {
        "texts": len(CHECK_TEXTS),
        "max_abs_difference": largest,
        "argmax_equal": agree,
        "tolerance": FP32_TOLERANCE if quantize == "none" else None,
    }
