"""`bgcli export`: ONNX export checked against PyTorch (engine: models/export.py)."""

from __future__ import annotations

from ...models import export

NAME = "export"
HELP = "Export a model to ONNX (optionally int8) for onnxruntime; classify/fill-mask/embed run it."
EXAMPLES = (
    "bgcli export -m runs/rt --format onnx -o runs/rt-onnx",
    "bgcli export -m runs/rt --quantize int8 -o runs/rt-int8 && bgcli classify -m runs/rt-int8 'dull'",
    "bgcli export -m minilm --task feature-extraction -o minilm-onnx",
)
CONFIG = export.ExportConfig


def run(config: export.ExportConfig) -> None:
    export.run(config)
