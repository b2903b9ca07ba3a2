"""Generation (`bgcli generate`, `api.generate`, the server's completions) with any causal LM:
left-padded batches that give the same text as generating each prompt alone."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError
from ..io.records import RecordStream, read_input_records, stream_to_writer
from ..models.skinny_linear import use_skinny_linears
from ..options import InputOptions, ModelOptions, OutputOptions, ServerOptions, option
from .loading import InferenceOptions, load_for_inference, model_max_length, process_sorted

PANEL = "Generation"


@dataclass
class GenerateConfig(InputOptions, ModelOptions, OutputOptions, InferenceOptions, ServerOptions):
    model: str = option(
        "gpt2",
        "Causal LM: local dir, Hub id, or alias (smollm2 works offline).",
        short="-m",
        metavar="MODEL",
        panel="Model",
    )
    batch_size: int = option(
        32,
        "Prompts generated together (left-padded; on a CPU 32 is ~1.3x faster than 16).",
        panel="Speed",
        ge=1,
    )
    max_new_tokens: int = option(50, "Most tokens to generate per prompt.", panel=PANEL, ge=1)
    min_new_tokens: int = option(0, "Fewest tokens before end-of-text is allowed.", panel=PANEL, ge=0)
    sample: bool = option(False, "Sample instead of greedy decoding.", panel=PANEL)
    temperature: float = option(1.0, "Sampling temperature (with --sample).", panel=PANEL, gt=0)
    top_k: int = option(
        50, "Sample among the k most likely tokens (with --sample; 0 = all).", panel=PANEL, ge=0
    )
    top_p: float = option(
        1.0, "Nucleus sampling: smallest set with this total probability.", panel=PANEL, gt=0, le=1
    )
    repetition_penalty: float = option(1.0, "Penalty > 1 discourages repeating tokens.", panel=PANEL, gt=0)
    no_repeat_ngram_size: int = option(0, "Never repeat an n-gram of this size (0 = off).", panel=PANEL, ge=0)
    num_beams: int = option(1, "Beam search width (1 = no beam search).", panel=PANEL, ge=1)
    num_return_sequences: int = option(
        1, "Completions per prompt (records carry sequence_index).", panel=PANEL, ge=1
    )
    seed: int | None = option(None, "Random seed: same seed, same inputs, same text.", panel=PANEL)
    stop: list[str] = option(
        [], "Stop at this string (repeatable); it is cut from the completion.", panel=PANEL, metavar="TEXT"
    )
    chat: bool = option(
        False, "Wrap each prompt in the model's chat template (instruct models).", panel=PANEL
    )
    system: str | None = option(None, "System message for --chat.", panel=PANEL)


CONFIG = GenerateConfig


def input_records(config: GenerateConfig) -> RecordStream:
    return read_input_records(config.texts, config.input, config.input_format, config.text_field)


def window(config: GenerateConfig) -> int:
    """Prompts read ahead and sorted by length together."""
    return config.batch_size * 4


def process(config: GenerateConfig, records, writer, loaded=None) -> None:
    """Complete `records` into `writer`: what the CLI and the Python API both run (seeded once)."""
    generator = Generator(*(load(config) if loaded is None else loaded), config)
    seed_everything(config.seed)
    stream_to_writer(records, generator.generate, writer, window=window(config))


def seed_everything(seed: int | None) -> None:
    if seed is not None:
        from transformers import set_seed

        set_seed(seed)


def load(config: GenerateConfig):
    """The heavy part (kept warm by `bgcli serve`): the causal LM and its (left-padding) tokenizer."""
    from transformers import AutoModelForCausalLM

    return load_for_inference(
        config,
        config,
        AutoModelForCausalLM,
        "text generation",
        check=require_causal_lm,
        tokenizer_kwargs={"padding_side": "left"},
        trained_by="bgcli finetune --task clm",
    )


def processor(loaded, config: GenerateConfig):
    """Seeded per call, so a server batch gives what `bgcli generate --seed N` gives."""
    generator = Generator(*loaded, config)

    def run(records) -> list:
        seed_everything(config.seed)
        return generator.generate(records)

    return run


def validate(config: GenerateConfig) -> None:
    if config.max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be at least 1")
    if (
        config.num_return_sequences > 1
        and not config.sample
        and config.num_beams < config.num_return_sequences
    ):
        raise UsageError("--num-return-sequences > 1 needs --sample or --num-beams >= that number")
    if config.system and not config.chat:
        raise UsageError("--system needs --chat")


def require_causal_lm(resolved, config) -> None:
    """BERT has a (rarely useful) causal head class; only models built as decoders generate."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    causal_classes = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    architectures = getattr(config, "architectures", None) or []
    is_decoder_family = config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if not is_decoder_family or (architectures and not set(architectures) & causal_classes):
        raise UsageError(
            f"model '{resolved.spec}' ({config.model_type}, {', '.join(architectures) or 'no head'}) "
            "is not a causal LM and cannot generate; use a GPT-style model (gpt2, smollm2, ...)"
        )


class Generator:
    def __init__(self, model, tokenizer, config: GenerateConfig):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        if tokenizer.pad_token is None:  # GPT-2: pad with eos; left padding keeps batches exact
            tokenizer.pad_token = tokenizer.eos_token
        if config.chat and not tokenizer.chat_template:
            raise UsageError(f"model '{config.model}' has no chat template; drop --chat")
        self.eos_ids = self._eos_ids()
        self.limit = model_max_length(tokenizer, model)
        self.generation_config = self._generation_config()
        # Prompts already rendered with the chat template (the server's chat endpoint).
        self.templated = False
        use_skinny_linears(model)  # faster decode steps on a CPU, same bits (see the module)

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return set(eos if isinstance(eos, list) else [eos]) - {None}

    def _generation_config(self):
        import copy

        c = self.config
        gen = copy.deepcopy(self.model.generation_config)
        gen.max_new_tokens = c.max_new_tokens
        gen.min_new_tokens = c.min_new_tokens or None
        gen.do_sample = c.sample
        gen.num_beams = c.num_beams
        gen.num_return_sequences = c.num_return_sequences
        gen.repetition_penalty = c.repetition_penalty
        gen.no_repeat_ngram_size = c.no_repeat_ngram_size or None
        gen.pad_token_id = self.tokenizer.pad_token_id
        if c.sample:
            # top_k 0 stays 0: transformers 5 fills a None with its default (50), not "off"
            gen.temperature, gen.top_k, gen.top_p = c.temperature, c.top_k, c.top_p
        else:  # greedy/beam: sampling knobs from the model's config would only warn
            gen.temperature, gen.top_k, gen.top_p = None, None, None
        if c.stop:
            gen.stop_strings = list(c.stop)
        return gen

    def prompt_text(self, prompt: str) -> str:
        if not self.config.chat or self.templated:
            return prompt
        messages = [{"role": "system", "content": self.config.system}] if self.config.system else []
        messages.append({"role": "user", "content": prompt})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def prompt_ids(self, prompt: str) -> list[int]:
        """The prompt's tokens, whole (the server refuses what does not fit; encode() cuts)."""
        templated = self.config.chat or self.templated  # the template holds the special tokens
        return self.tokenizer(self.prompt_text(prompt), add_special_tokens=not templated)["input_ids"]

    def encode(self, prompt: str):
        ids = self.prompt_ids(prompt)
        room = self.limit - self.config.max_new_tokens
        if room < 1:
            raise UsageError(
                f"--max-new-tokens {self.config.max_new_tokens} does not fit the "
                f"model's {self.limit}-token window"
            )
        if len(ids) > room:
            from ..io.console import warn

            warn(
                f"a prompt is longer than {room} tokens (window {self.limit} minus --max-new-tokens); "
                "keeping its last tokens"
            )
            ids = ids[-room:]
        return ids

    def generate(self, records) -> list:
        encoded = [self.encode(r.text) for r in records]
        lengths = [len(ids) for ids in encoded]

        def run_batch(batch: list[int]) -> list:
            return self._generate_ids([encoded[i] for i in batch], [records[i].text for i in batch])

        return process_sorted(lengths, self.config.batch_size, run_batch, split_by_padding=False)

    def _generate_ids(self, batch_ids: list[list[int]], prompts: list[str]) -> list:
        import torch

        pad = self.tokenizer.pad_token_id
        width = max(len(ids) for ids in batch_ids)
        input_ids = torch.full((len(batch_ids), width), pad, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        for row, ids in enumerate(batch_ids):  # left padding
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention[row, width - len(ids) :] = 1
        device = self.model.device
        kwargs = {"tokenizer": self.tokenizer} if self.config.stop else {}
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                generation_config=self.generation_config,
                **kwargs,
            )
        new_tokens = output[:, width:].cpu().tolist()
        n = self.config.num_return_sequences
        results = []
        for row, ids in enumerate(batch_ids):
            records = []
            for index in range(n):
                record = self.describe(ids, new_tokens[row * n + index], prompts[row])
                if n > 1:
                    record["sequence_index"] = index
                records.append(record)
            results.append(records)
        return results

    def describe(self, prompt_ids: list[int], new_ids: list[int], prompt: str) -> dict:
        finish = "length"
        for position, token in enumerate(new_ids):
            if token in self.eos_ids:
                new_ids, finish = new_ids[: position + 1], "eos"
                break
        completion = self.decode_completion(prompt_ids, new_ids)
        cut = min((completion.find(s) for s in self.config.stop if s in completion), default=-1)
        if cut >= 0:
            completion, finish = completion[:cut], "stop"
        return {
            "prompt": prompt,
            "completion": completion,
            "generated_tokens": len(new_ids),
            "finish_reason": finish,
        }

    def decode_completion(self, prompt_ids: list[int], new_ids: list[int]) -> str:
        """Decode prompt + completion together, then drop the prompt: decoding the new tokens
        alone can lose a leading space (SentencePiece) or split a character."""
        decode = self.tokenizer.decode
        full = decode(prompt_ids + new_ids, skip_special_tokens=True)
        prefix = decode(prompt_ids, skip_special_tokens=True)
        return full[len(prefix) :] if full.startswith(prefix) else decode(new_ids, skip_special_tokens=True)

    def stream(self, prompt: str) -> None:
        import torch
        from transformers import TextStreamer

        from ..io.console import info

        ids = torch.tensor([self.encode(prompt)], device=self.model.device)
        streamer = TextStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                generation_config=self.generation_config,
                streamer=streamer,
            )
        new_ids = output[0, ids.shape[1] :].tolist()
        record = self.describe(ids[0].tolist(), new_ids, prompt)
        info(f"[{record['generated_tokens']} tokens, finish: {record['finish_reason']}]")
