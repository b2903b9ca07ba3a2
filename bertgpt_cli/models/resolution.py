"""`--model` resolution, shared by every command: a local dir, a built-in alias, or a Hub id.

Loading goes through here so that every command gets the same offline behaviour
(fail in about a second, fall back to the HF cache), safetensors-only weights,
`trust_remote_code` off by default, and one-line errors instead of tracebacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BgcliError, UsageError, first_line
from ..io.assets import BUILTIN_MODELS
from ..io.console import info
from ..io.hub import go_offline, hub_reachable, offline_from_env
from ..io.run_dirs import FROM_SCRATCH_MARKER, last_complete_checkpoint, unfinished_run_message
from .adapters import ADAPTER_DIR, adapter_only_base, apply_adapter, not_in_adapter

ALIASES_HINT = ", ".join(BUILTIN_MODELS)
# Written by `bgcli pretrain` beside a config.json and tokenizer: the model starts from random
# weights drawn by from_config (seeded), not from a checkpoint.


@dataclass
class ResolvedModel:
    spec: str  # what the user typed
    location: str  # what from_pretrained gets: a local dir or a Hub id
    source: str  # "local" | "alias" | "hub" | "scratch" (config + tokenizer, weights drawn at random)
    local_files_only: bool = False
    revision: str | None = None
    trust_remote_code: bool = False
    # An adapter-only run dir (finetune --lora --save-adapter-only): `location` is its base;
    # the adapter and the tokenizer come from this dir.
    adapter_run: str | None = None

    @property
    def run_location(self) -> str:
        return self.adapter_run or self.location

    def pretrained_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"trust_remote_code": self.trust_remote_code}
        if self.local_files_only:
            kwargs["local_files_only"] = True
        if self.revision:
            kwargs["revision"] = self.revision
        return kwargs


def _looks_like_path(spec: str) -> bool:
    """`./x`, `/x`, `~/x`, `a/b/c`, `x/`, or `runs/x` when `runs` is a local folder: a path,
    never a Hub id (which would fail later with a confusing Hub message)."""
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or spec.endswith("/"):
        return True
    return "/" in spec and Path(spec).expanduser().parent.is_dir()


def resolve_model(
    spec: str,
    *,
    offline: bool = False,
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> ResolvedModel:
    """Decide where a model comes from, without importing transformers."""
    if offline:
        go_offline()
    check_model_spec(spec)
    path = Path(spec).expanduser()
    base = adapter_only_base(path) if path.is_dir() else None
    if base is not None:
        if Path(base).expanduser().resolve() == path.resolve():
            raise UsageError(f"the adapter in '{spec}' names its own dir as its base")
        resolved = resolve_model(
            base, offline=offline, revision=revision, trust_remote_code=trust_remote_code
        )
        resolved.spec, resolved.adapter_run = spec, str(path)
        return resolved
    if path.is_dir():
        source = "scratch" if (path / FROM_SCRATCH_MARKER).is_file() else "local"
        return ResolvedModel(spec, str(path), source, True, None, trust_remote_code)
    if spec in BUILTIN_MODELS:
        model_dir = BUILTIN_MODELS[spec].model_dir()
        return ResolvedModel(spec, str(model_dir), "alias", True, None, trust_remote_code)
    return _resolve_hub_id(spec, revision, trust_remote_code)


def check_model_spec(spec: str) -> None:
    """Refuse a local spec that is no model dir, without loading, converting an alias or asking
    the Hub (`bgcli serve` checks every -m this way before it starts listening)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(not_a_model_dir_message(spec, path))
    elif spec not in BUILTIN_MODELS and (_looks_like_path(spec) or path.exists()):
        raise UsageError(
            f"model dir '{spec}' not found; check the path, or use a Hub id or a built-in "
            f"alias ({ALIASES_HINT})"
        )


def not_a_model_dir_message(spec: str, path: Path) -> str:
    return unfinished_run_message(spec, path) or (
        f"'{spec}' is a directory without config.json, not a model dir; "
        "point --model at the folder that holds config.json"
    )


def resolve_model_options(options: Any) -> ResolvedModel:
    """`resolve_model` with the flags of `options.ModelOptions` (every command has them)."""
    return resolve_model(
        options.model,
        offline=options.offline,
        revision=options.revision,
        trust_remote_code=options.trust_remote_code,
    )


def _resolve_hub_id(spec: str, revision: str | None, trust_remote_code: bool) -> ResolvedModel:
    if offline_from_env():
        return ResolvedModel(spec, spec, "hub", True, revision, trust_remote_code)
    if hub_reachable():
        return ResolvedModel(spec, spec, "hub", False, revision, trust_remote_code)
    # No network: a cached copy still works; say so once instead of retrying for ~23 s.
    info(f"The Hub is unreachable; looking for '{spec}' in the local HF cache.")
    return ResolvedModel(spec, spec, "hub", True, revision, trust_remote_code)


def unavailable_model_message(resolved: ResolvedModel, detail: str = "") -> str:
    spec = resolved.spec
    if resolved.source == "hub" and resolved.local_files_only:
        why = (
            "the Hub is offline (--offline / HF_HUB_OFFLINE=1)"
            if offline_from_env()
            else ("the Hub is unreachable")
        )
        return (
            f"cannot load model '{spec}': {why} and it is not in the local HF cache; "
            f"ways out: connect to the network (without --offline), download it once while "
            f"online, pass a local model dir, or use a built-in alias ({ALIASES_HINT})"
        )
    if resolved.source == "hub":
        return (
            f"cannot load model '{spec}' from the Hub{': ' + detail if detail else ''}; check the "
            f"id (org/name), or pass a local dir or a built-in alias ({ALIASES_HINT})"
        )
    return f"cannot load model from '{resolved.location}': {detail}"


def load_config(resolved: ResolvedModel):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(resolved.run_location, **resolved.pretrained_kwargs())
    except (OSError, ValueError, KeyError) as exc:
        raise BgcliError(load_failure_message(resolved, exc)) from exc


# Any one of these makes a folder's tokenizer loadable (fast, WordPiece, BPE, SentencePiece).
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


def load_tokenizer(resolved: ResolvedModel, **kwargs: Any):
    from transformers import AutoTokenizer

    require_tokenizer_files(resolved)
    try:
        return AutoTokenizer.from_pretrained(resolved.run_location, **resolved.pretrained_kwargs(), **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise BgcliError(load_failure_message(resolved, exc)) from exc


def require_tokenizer_files(resolved: ResolvedModel) -> None:
    """Without its tokenizer files transformers builds an empty tokenizer for a local model dir:
    every word becomes [UNK] and a classifier answers confidently about nothing."""
    folder = Path(resolved.run_location)
    if (resolved.source == "hub" and not resolved.adapter_run) or not folder.is_dir():
        return
    if any((folder / name).is_file() for name in TOKENIZER_FILES) or any(folder.glob("*.gguf")):
        return  # a GGUF file carries its tokenizer
    expected = ", ".join(TOKENIZER_FILES[:3])
    raise UsageError(
        f"model dir '{resolved.spec}' has no tokenizer files (none of {expected}, ...); "
        "copy the tokenizer it was trained with into it (tokenizer.save_pretrained(DIR))"
    )


def check_tokenizer_fits_model(resolved: ResolvedModel, tokenizer: Any, config: Any) -> None:
    """A tokenizer of only special tokens, or one far smaller than the model's embedding
    matrix, is not the model's own: its ids would point at the wrong rows."""
    size = len(tokenizer)
    embedding_rows = getattr(config, "vocab_size", None) or 0
    only_special = size <= len(set(tokenizer.all_special_ids)) + 1
    if only_special or (embedding_rows and size < embedding_rows // 2):
        raise UsageError(
            f"the tokenizer in '{resolved.spec}' has {size} tokens but the model has {embedding_rows} "
            "embedding rows: it is not the model's own tokenizer; copy the right tokenizer files "
            "(tokenizer.json / vocab.txt ...) into the model dir"
        )


def load_failure_message(resolved: ResolvedModel, exc: BaseException) -> str:
    """One line for a config, tokenizer or weights load that failed: remote code is named as
    such (the fix is a flag), anything else as an unavailable model."""
    if "trust_remote_code" in str(exc):
        return (
            f"model '{resolved.spec}' needs to run its own code from the Hub; pass --trust-remote-code "
            "only if you trust that repository"
        )
    return unavailable_model_message(resolved, first_line(exc))


def is_head_weight(key: str, model: Any) -> bool:
    """Whether a state-dict key belongs to a task head ("cls.predictions.bias", "classifier.weight")
    rather than to the base encoder/decoder ("bert.encoder...", `model.base_model_prefix`)."""
    return key.split(".")[0] != model.base_model_prefix


def supports(config: Any, auto_class: Any) -> bool:
    """Whether `auto_class` (e.g. AutoModelForMaskedLM) has a head for this architecture."""
    return type(config) in auto_class._model_mapping


def load_model(resolved: ResolvedModel, auto_class: Any, task: str, config: Any = None, **kwargs: Any):
    """Load weights (safetensors only) for `task`, or say in one line why this model can't do it."""
    config = config if config is not None else load_config(resolved)
    if not supports(config, auto_class):
        raise UsageError(
            f"model '{resolved.spec}' ({config.model_type}) cannot do {task}; "
            f"pick a model with a {task} head (see `bgcli models`)"
        )
    if resolved.source == "scratch":
        return from_scratch(auto_class, config, kwargs.get("output_loading_info", False))
    if resolved.adapter_run:
        return load_with_adapter(resolved, auto_class, config, **kwargs)
    try:
        return auto_class.from_pretrained(
            resolved.location,
            config=config,
            use_safetensors=True,
            **resolved.pretrained_kwargs(),
            **kwargs,
        )
    except (OSError, ValueError) as exc:
        detail = first_line(exc)
        if "safetensors" in detail.lower():
            raise BgcliError(missing_safetensors_message(resolved)) from exc
        raise BgcliError(load_failure_message(resolved, exc)) from exc
    except Exception as exc:
        if type(exc).__name__ != "SafetensorError":  # safetensors' own type; not importable cheaply
            raise
        weights = Path(resolved.location) / "model.safetensors"
        raise BgcliError(
            f"'{weights}' is truncated or corrupt ({first_line(exc)}); re-save or re-download the model"
        ) from exc


def load_with_adapter(resolved: ResolvedModel, auto_class: Any, config: Any, **kwargs: Any):
    """An adapter-only run dir: its base, with the adapter merged in."""
    import copy
    import dataclasses

    base = dataclasses.replace(resolved, adapter_run=None)
    # The trained config (labels, head) over the base's weights, at the base's vocabulary size;
    # rows a run added (--chat-template chatml) are grown before the adapter is applied.
    base_config = copy.deepcopy(config)
    base_config.vocab_size = load_config(base).vocab_size
    loaded = load_model(base, auto_class, "this", base_config, **kwargs)
    model, loading = loaded if kwargs.get("output_loading_info") else (loaded, None)
    adapter_dir = Path(resolved.adapter_run) / ADAPTER_DIR
    model = apply_adapter(model, str(adapter_dir), config.vocab_size)
    if loading is not None:  # weights the adapter brings (a trained head) are not missing
        loading = {**loading, "missing_keys": not_in_adapter(loading.get("missing_keys") or [], adapter_dir)}
    return (model, loading) if loading is not None else model


def from_scratch(auto_class: Any, config: Any, output_loading_info: bool):
    """A model with freshly initialised weights (torch's RNG: seeded by the caller)."""
    model = auto_class.from_config(config)
    if output_loading_info:  # nothing was loaded, so nothing is missing from a checkpoint
        return model, {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
    return model


def missing_safetensors_message(resolved: ResolvedModel) -> str:
    """No safetensors file: a pickled-only checkpoint, or a checkpoint whose save was cut off."""
    folder = Path(resolved.location)
    if folder.is_dir() and not list(folder.glob("*.bin")):
        run_dir = folder.parent if folder.name.startswith("checkpoint-") else folder
        complete = last_complete_checkpoint(run_dir)
        other = f"; the latest complete one is {complete}" if complete and complete != str(folder) else ""
        return f"'{resolved.spec}' is incomplete (its save was interrupted: no model weights){other}"
    return (
        f"model '{resolved.spec}' has no safetensors weights; bgcli does not load pickled "
        "(.bin) weights: convert it with save_pretrained() in a trusted environment"
    )


def checkpoint_keys(resolved: ResolvedModel) -> set[str] | None:
    """The weight names a model's safetensors checkpoint holds (None when it cannot be read:
    weights drawn at random, or an unreachable file). Reads headers only."""
    import json

    if resolved.source == "scratch":
        return set()
    index = model_file(resolved, "model.safetensors.index.json")
    if index is not None:
        return set(json.loads(index.read_text()).get("weight_map", {}))
    weights = model_file(resolved, "model.safetensors")
    if weights is None:
        return None
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as handle:
        return set(handle.keys())


def model_file(resolved, name: str) -> Path | None:
    """A file of the model (local dir or Hub cache), or None when it has none."""
    folder = Path(resolved.location)
    if folder.is_dir():
        path = folder / name
        return path if path.is_file() else None
    from transformers.utils import cached_file

    try:
        found = cached_file(
            resolved.location,
            name,
            revision=resolved.revision,
            local_files_only=resolved.local_files_only,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
    except OSError:
        return None
    return Path(found) if found else None
