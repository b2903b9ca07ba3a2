"""LoRA for every task (`--lora`, built on peft): low-rank adapters on the linear layers of the
transformer blocks, a head the task creates trained in full, and the run saved twice: merged
(loads anywhere, no peft) and as adapter/ (what `PeftModel.from_pretrained` reads).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..io.console import info
from ..models.adapters import ADAPTER_DIR, quiet_peft

LINEAR_CLASSES = ("Linear", "Conv1D")  # nn.Linear, and GPT-2's transposed transformers.Conv1D
BLOCK_INDEX = re.compile(r"\.\d+\.")  # layers.3.self_attn.q_proj: inside a repeated block


def block_linear_names(model) -> list[str]:
    """Every linear layer inside the model's repeated blocks (attention and MLP), by its full
    name: found from the model, so any architecture works without a list per model type.
    Poolers, heads and embeddings sit outside the blocks and are left alone."""
    base = _base_prefix(model)
    return [
        name
        for name, module in model.named_modules()
        if type(module).__name__ in LINEAR_CLASSES and name.startswith(base) and BLOCK_INDEX.search(name)
    ]


def _base_prefix(model) -> str:
    prefix = getattr(model, "base_model_prefix", "")
    return f"{prefix}." if prefix and hasattr(model, prefix) else ""


def created_head_modules(model) -> list[str]:
    """The head's modules outside the base model whose weights are not shared with it (a
    decoder tied to the input embeddings stays with them): trained in full and saved."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    if base is None:
        return []
    shared = {p.data_ptr() for p in base.parameters()}

    def own(children) -> list[str]:
        found = []
        for name, child in children:
            pointers = {p.data_ptr() for p in child.parameters()}
            if not pointers:
                continue
            if pointers & shared:
                found += [f"{name}.{inner}" for inner in own(child.named_children())]
            else:
                found.append(name)
        return found

    return own((name, child) for name, child in model.named_children() if child is not base)


def created_modules(model, saved: set[str] | None) -> list[str]:
    """Modules with weights the checkpoint did not hold (drawn at random when the model was
    loaded: a pooler a bare encoder lacked, a new MLM transform), so adapters on frozen noise
    would learn around them: they are trained in full instead. Checkpoint names may lack the
    base model's prefix (sentence-transformers' minilm), so both spellings count."""
    if not saved:
        return []
    prefix = _base_prefix(model)
    tied = {model.get_input_embeddings().weight.data_ptr()}
    owners = []
    for name, parameter in model.named_parameters():
        if name in saved or name.removeprefix(prefix) in saved or parameter.data_ptr() in tied:
            continue
        owner = name.rsplit(".", 1)[0]
        module = model.get_submodule(owner)
        if any(p.data_ptr() in tied for p in module.parameters()):
            continue  # a bare bias beside a tied decoder (cls.predictions.bias)
        owners.append(owner)
    return owners


def outermost(names: list[str]) -> list[str]:
    """Names without those inside another listed one (classifier, not classifier.dense too)."""
    unique = sorted(set(names))
    return [n for n in unique if not any(n.startswith(other + ".") for other in unique if other != n)]


def wrap(model, config, head_created: bool, new_token_ids=(), saved: set[str] | None = None):
    """The model with adapters (a peft PeftModel), the rest frozen."""
    from peft import LoraConfig, get_peft_model

    quiet_peft()
    if config.lora_targets == "all-linear":
        targets: Any = block_linear_names(model)
        if not targets:
            raise UsageError(
                f"found no linear layers in the blocks of '{config.model}'; name them with --lora-targets"
            )
    else:
        targets = [name.strip() for name in config.lora_targets.split(",") if name.strip()]
    head = outermost((created_head_modules(model) if head_created else []) + created_modules(model, saved))
    settings = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        modules_to_save=head or None,
        fan_in_fan_out=any(type(m).__name__ == "Conv1D" for m in model.modules()),
        # Rows of tokens the run added (chatml markers) start random: they must learn too.
        trainable_token_indices={embedding_name(model): list(new_token_ids)} if new_token_ids else None,
    )
    try:
        wrapped = get_peft_model(model, settings)
    except ValueError as exc:  # a --lora-targets name that matches nothing
        raise UsageError(f"--lora-targets: {str(exc).splitlines()[0]}") from exc
    trainable, total = trainable_parameters(wrapped)
    info(
        f"LoRA r={config.lora_r} alpha={config.lora_alpha:g} on {count_targets(wrapped)} layers"
        + (f", head trained in full ({', '.join(head)})" if head else "")
        + f": {trainable:,} of {total:,} parameters trained ({trainable / total:.2%})"
    )
    return wrapped


def embedding_name(model) -> str:
    embeddings = model.get_input_embeddings()
    return next(name for name, module in model.named_modules() if module is embeddings).rsplit(".", 1)[-1]


def count_targets(model) -> int:
    return sum(1 for _, module in model.named_modules() if hasattr(module, "lora_A") and module.lora_A)


def trainable_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def is_lora_model(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")


def save_adapter(model, run_folder: Path, base_spec: str) -> None:
    """RUN/adapter/: adapter_config.json + adapter_model.safetensors, with the base named as the
    user named it (an alias or Hub id resolves anywhere; a local path as an absolute path)."""
    folder = run_folder / ADAPTER_DIR
    model.save_pretrained(str(folder), safe_serialization=True)
    (folder / "README.md").unlink(missing_ok=True)  # peft's blank card; the run's README.md says it all
    config_file = folder / "adapter_config.json"
    settings = json.loads(config_file.read_text())
    settings["base_model_name_or_path"] = portable_spec(base_spec)
    config_file.write_text(json.dumps(settings, indent=2) + "\n")


def portable_spec(spec: str) -> str:
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec
