"""`--model` resolution, shared by every command: a local dir, a built-in alias, or a Hub id.

Loading goes through here so that every command gets the same offline behaviour
(fail in about a second, fall back to the HF cache), safetensors-only weights,
`trust_remote_code` off by default, and one-line errors instead of tracebacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .assets import BUILTIN_MODELS
from .console import info
from .errors import BgcliError, UsageError, first_line
from .hub import go_offline, hub_reachable, offline_from_env
from .run_dirs import unfinished_run_message

ALIASES_HINT = ", ".join(BUILTIN_MODELS)


@dataclass
class ResolvedModel:
    spec: str  # what the user typed
    location: str  # what from_pretrained gets: a local dir or a Hub id
    source: str  # "local" | "alias" | "hub"
    local_files_only: bool = False
    revision: str | None = None
    trust_remote_code: bool = False

    def pretrained_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"trust_remote_code": self.trust_remote_code}
        if self.local_files_only:
            kwargs["local_files_only"] = True
        if self.revision:
            kwargs["revision"] = self.revision
        return kwargs


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1 or spec.endswith("/")


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
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(not_a_model_dir_message(spec, path))
        return ResolvedModel(spec, str(path), "local", True, None, trust_remote_code)
    if spec in BUILTIN_MODELS:
        model_dir = BUILTIN_MODELS[spec].model_dir()
        return ResolvedModel(spec, str(model_dir), "alias", True, None, trust_remote_code)
    if _looks_like_path(spec) or path.exists():
        raise UsageError(
            f"model dir '{spec}' not found; check the path, or use a Hub id or a built-in "
            f"alias ({ALIASES_HINT})"
        )
    return _resolve_hub_id(spec, revision, trust_remote_code)


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
        return AutoConfig.from_pretrained(resolved.location, **resolved.pretrained_kwargs())
    except (OSError, ValueError, KeyError) as exc:
        raise BgcliError(unavailable_model_message(resolved, first_line(exc))) from exc


def load_tokenizer(resolved: ResolvedModel, **kwargs: Any):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(resolved.location, **resolved.pretrained_kwargs(), **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise BgcliError(unavailable_model_message(resolved, first_line(exc))) from exc


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
            raise BgcliError(
                f"model '{resolved.spec}' has no safetensors weights; bgcli does not load pickled "
                "(.bin) weights: convert it with save_pretrained() in a trusted environment"
            ) from exc
        raise BgcliError(unavailable_model_message(resolved, detail)) from exc
