"""Exported models (`bgcli export --format onnx`) run through onnxruntime behind the small part of
a transformers model's interface the inference commands use: `model(**inputs).logits` (or
`.last_hidden_state`), `.config`, `.device`. classify, fill-mask and embed then work unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..errors import UsageError
from .heads import HEADS, head_for

EXPORT_FILE = "bgcli_export.json"
ONNX_FILE = "model.onnx"


def export_info(location: str) -> dict | None:
    """The export record of an exported model dir, None for any other model."""
    path = Path(location) / EXPORT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise UsageError(f"'{path}' is not valid JSON ({exc}); export the model again") from exc


def onnxruntime_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("onnxruntime")
    except PackageNotFoundError:
        return None


class OnnxModel:
    """An onnxruntime session that answers like the transformers model it was exported from."""

    def __init__(self, location: str, config: Any, info: dict, auto_class_name: str) -> None:
        wanted = next((h.task for h in HEADS if h.onnx_outputs and h.auto_class == auto_class_name), None)
        if info.get("task") != wanted:
            raise UsageError(
                f"'{location}' was exported for {info.get('task')}, not {wanted}; export it again with "
                f"`bgcli export --task {wanted}`"
            )
        if onnxruntime_version() is None:
            raise UsageError(
                f"'{location}' is an ONNX export and onnxruntime is not installed: "
                "pip install 'bertgpt-cli[onnx]'"
            )
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings are not the user's business
        self.session = onnxruntime.InferenceSession(
            str(Path(location) / info.get("file", ONNX_FILE)), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = list(head_for(wanted).onnx_outputs)
        self.config = config
        self.info = info

    @property
    def device(self):
        import torch

        return torch.device("cpu")

    def eval(self) -> OnnxModel:
        return self

    def to(self, *args, **kwargs) -> OnnxModel:
        return self

    def __call__(self, **inputs) -> SimpleNamespace:
        import torch

        feed = {name: inputs[name].cpu().numpy() for name in self.input_names if name in inputs}
        if "token_type_ids" in self.input_names and "token_type_ids" not in feed:
            feed["token_type_ids"] = torch.zeros_like(inputs["input_ids"]).numpy()
        outputs = self.session.run(self.output_names, feed)
        return SimpleNamespace(
            **{n: torch.from_numpy(v) for n, v in zip(self.output_names, outputs, strict=True)}
        )
