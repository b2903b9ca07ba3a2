"""What `bgcli pretrain` starts from: a named architecture size (or a config file) and a
tokenizer (given, or trained on the fly), written as a weightless model dir that
model_resolution turns into freshly initialised weights (`FROM_SCRATCH_MARKER`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..io.console import info


@dataclass(frozen=True)
class Size:
    layers: int
    hidden: int
    heads: int

    @property
    def intermediate(self) -> int:
        return 4 * self.hidden  # BERT's and GPT-2's feed-forward width

    def body_parameters(self) -> int:
        """Weights outside the token/position embeddings: per layer 4 H^2 + 4 H attention,
        8 H^2 + 5 H feed-forward, 4 H layer norms (BERT and GPT-2 alike)."""
        h = self.hidden
        return self.layers * (12 * h * h + 13 * h)


# BERT's compact models (Turc et al. 2019, "Well-Read Students Learn Better") and BERT-base;
# gpt2 base is OpenAI's 124M "gpt2".
SIZES = {
    "tiny": Size(2, 128, 2),
    "mini": Size(4, 256, 4),
    "small": Size(4, 512, 8),
    "base": Size(12, 768, 12),
}
ARCHS = ("bert", "gpt2")
OBJECTIVES = {"bert": ("mlm+nsp", "mlm"), "gpt2": ("clm",)}
TOKENIZER_TYPES = {"bert": "wordpiece", "gpt2": "bpe"}
MAX_POSITIONS = {"bert": 512, "gpt2": 1024}


def sizes_help() -> str:
    """The presets with their parameter counts, for --help (no torch needed)."""
    parts = []
    for name, size in SIZES.items():
        body = size.body_parameters() / 1e6
        parts.append(
            f"{name}: {size.layers} layers, {size.hidden} hidden, {size.heads} heads "
            f"({body:.1f}M + {size.hidden} x vocab embeddings)"
        )
    return "; ".join(parts)


def model_config(arch: str, size: str, tokenizer, block_size: int, config_file: str | None):
    """The transformers config of the model to pre-train, sized to the tokenizer's vocabulary."""
    from transformers import BertConfig, GPT2Config

    positions = max(MAX_POSITIONS[arch], block_size)
    if config_file:
        return config_from_file(config_file, arch, tokenizer)
    preset = SIZES[size]
    if arch == "bert":
        return BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=preset.hidden,
            num_hidden_layers=preset.layers,
            num_attention_heads=preset.heads,
            intermediate_size=preset.intermediate,
            max_position_embeddings=positions,
            type_vocab_size=2,
            pad_token_id=tokenizer.pad_token_id,
        )
    eos = tokenizer.eos_token_id
    return GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=positions,
        n_embd=preset.hidden,
        n_layer=preset.layers,
        n_head=preset.heads,
        bos_token_id=eos,
        eos_token_id=eos,
    )


def config_from_file(path: str, arch: str, tokenizer):
    from transformers import AutoConfig

    file = Path(path)
    try:
        values = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"--model-config {path}: cannot read it as JSON ({exc})") from exc
    model_type = values.pop("model_type", None)
    if model_type != arch:
        raise UsageError(
            f'--model-config {path} has model_type {model_type!r}; it must be "{arch}" for --arch {arch}'
        )
    values["vocab_size"] = len(tokenizer)  # the embedding matrix always fits the tokenizer
    try:
        return AutoConfig.for_model(model_type, **values)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--model-config {path}: {exc}") from exc


def load_tokenizer_spec(spec: str, offline: bool):
    """--tokenizer: a `bgcli tokenizer train` folder (any folder with tokenizer files) or a model."""
    from ..models.resolution import TOKENIZER_FILES, load_tokenizer, resolve_model

    folder = Path(spec).expanduser()
    if folder.is_dir() and any((folder / name).is_file() for name in TOKENIZER_FILES):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(folder))
    return load_tokenizer(resolve_model(spec, offline=offline))


def check_tokenizer(tokenizer, arch: str, objective: str) -> None:
    if objective.startswith("mlm"):
        missing = [
            n for n in ("mask_token", "cls_token", "sep_token", "pad_token") if getattr(tokenizer, n) is None
        ]
        if missing:
            raise UsageError(
                f"the tokenizer has no {', '.join(missing)}; BERT pre-training needs them "
                "(`bgcli tokenizer train --type wordpiece` makes such a tokenizer)"
            )
    elif tokenizer.eos_token is None:
        raise UsageError(
            "the tokenizer has no end-of-text token; GPT-2 pre-training needs one "
            "(`bgcli tokenizer train --type bpe` makes such a tokenizer)"
        )


def write_init_dir(folder: Path, config, tokenizer, description: dict[str, Any]) -> None:
    """config.json + tokenizer + the from-scratch marker: a model dir without weights."""
    from ..io.run_dirs import FROM_SCRATCH_MARKER

    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    (folder / FROM_SCRATCH_MARKER).write_text(json.dumps(description, indent=2) + "\n")
    info(f"pre-training from scratch: {description['summary']}")


def describe(arch: str, size: str, config, objective: str, config_file: str | None) -> dict[str, Any]:
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
    where = f"--model-config {config_file}" if config_file else f"size {size}"
    shape = f"{layers} layers, hidden {hidden}, vocab {config.vocab_size}"
    return {
        "arch": arch,
        "size": None if config_file else size,
        "objective": objective,
        "summary": f"{arch} ({where}: {shape}), {objective}",
    }
