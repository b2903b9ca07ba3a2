"""Run dirs saved with `finetune --lora --save-adapter-only`: adapter/ (peft's
adapter_config.json + adapter_model.safetensors), the trained model's config.json (labels,
vocabulary size) and the tokenizer, but no merged weights. `-m DIR`
resolves the base the adapter names (an alias, Hub id, run dir or path) and loads base +
adapter, merged, so every command works on such a dir without knowing about peft."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import BgcliError, UsageError, first_line

ADAPTER_DIR = "adapter"
ADAPTER_CONFIG = "adapter_config.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def adapter_only_base(folder: Path) -> str | None:
    """The base model an adapter-only run dir names; None for any other folder."""
    config_file = folder / ADAPTER_DIR / ADAPTER_CONFIG
    if not config_file.is_file() or any((folder / name).is_file() for name in WEIGHT_FILES):
        return None
    try:
        base = json.loads(config_file.read_text()).get("base_model_name_or_path")
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"'{config_file}' is not readable JSON ({first_line(exc)}); re-save the adapter"
        ) from exc
    if not base:
        raise UsageError(f"'{config_file}' names no base model (base_model_name_or_path)")
    return base


def not_in_adapter(missing: list[str], adapter_dir: Path) -> list[str]:
    """The base's missing weights that the adapter does not bring (its modules_to_save)."""
    saved = json.loads((adapter_dir / ADAPTER_CONFIG).read_text()).get("modules_to_save") or []
    return [key for key in missing if not any(key == m or key.startswith(m + ".") for m in saved)]


def quiet_peft() -> None:
    """peft 0.21 asks transformers 5 a deprecated question on every wrap; nothing for a user."""
    import warnings

    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def apply_adapter(model: Any, adapter_dir: str, vocabulary: int | None) -> Any:
    """The base model with the adapter merged in (peft loads it; the result is a plain model)."""
    quiet_peft()
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise BgcliError("an adapter-only model needs peft: pip install peft") from exc
    if vocabulary and vocabulary != model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(vocabulary)  # the run added tokens (--chat-template chatml)
    try:
        return PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    except (OSError, ValueError, RuntimeError) as exc:
        raise BgcliError(f"cannot apply the adapter in '{adapter_dir}': {first_line(exc)}") from exc
