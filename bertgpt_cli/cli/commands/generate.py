"""`bgcli generate`: continue prompts with a causal LM (engine: inference/generate.py)."""

from __future__ import annotations

from ...inference import generate
from ...io.console import stdout_is_terminal
from ...io.output import RecordWriter, resolve_format
from ...serving.client import remote_or_local

NAME = "generate"
HELP = "Continue each prompt with a causal LM (GPT-2, SmolLM2, ...): greedy by default, --sample to sample."
EXAMPLES = (
    'bgcli generate -m smollm2 --chat "Recommend a comedy."',
    'cat prompts.txt | bgcli generate -m gpt2 --max-new-tokens 40 --stop "\\n" | jq -r .completion',
    'bgcli generate -m gpt2 --sample --temperature 0.8 --seed 7 "Once upon a time"',
)
CONFIG = generate.GenerateConfig


def run(config: generate.GenerateConfig) -> None:
    generate.validate(config)
    records = generate.input_records(config)
    writer = RecordWriter(
        config.format,
        text_key="completion",
        columns=["prompt", "completion", "generated_tokens", "finish_reason"],
    )
    if remote_or_local(NAME, config, records, writer, window=generate.window(config)):
        return
    loaded = generate.load(config)
    if len(config.texts) == 1 and should_stream(config):
        generate.seed_everything(config.seed)
        generate.Generator(*loaded, config).stream(config.texts[0])
        return
    generate.process(config, records, writer, loaded)


def should_stream(config: generate.GenerateConfig) -> bool:
    """One prompt, a person watching, plain output: print tokens as they come."""
    return (
        stdout_is_terminal()
        and resolve_format(config.format) in ("table", "text")
        and config.num_return_sequences == 1
        and config.num_beams == 1
        and not config.stop
    )
