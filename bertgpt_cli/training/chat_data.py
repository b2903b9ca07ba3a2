"""Instruction and chat records for `--task sft`: four layouts normalised to one list of
{role, content} messages, rendered with a chat template, and tokenized with the mask of the
tokens the loss trains on (the assistant's replies, each with its end-of-turn token).

Knows nothing of the CLI or the Trainer: records in, token ids and labels out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError

LAYOUTS = ("auto", "messages", "sharegpt", "prompt-completion", "alpaca")
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
}
IGNORE = -100

# ChatML (<|im_start|>role ... <|im_end|>), with {% generation %} markers around what the
# assistant says, so the mask comes from the template itself.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ message['content'] + '<|im_end|>' + '\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")
GENERATION_MARKER = re.compile(r"{%-?\s*generation\s*-?%}")


class BadRecord(ValueError):
    """A record that cannot become a conversation; its message says why."""


@dataclass(frozen=True)
class Columns:
    """Field names of the layouts (None: the layout's own)."""

    messages: str | None = None
    prompt: str | None = None
    completion: str | None = None


def detect_layout(column_names: list[str], columns: Columns, first: dict | None) -> str:
    """The layout of a dataset from its columns (and first record, for a renamed message list)."""
    names = set(column_names)
    if columns.messages:
        turns = (first or {}).get(columns.messages) or []
        sample = turns[0] if isinstance(turns, list) and turns else {}
        return "sharegpt" if isinstance(sample, dict) and "from" in sample else "messages"
    if columns.prompt or columns.completion:
        return "prompt-completion"
    for layout, needed in (
        ("messages", {"messages"}),
        ("sharegpt", {"conversations"}),
        ("prompt-completion", {"prompt", "completion"}),
        ("alpaca", {"instruction", "output"}),
    ):
        if needed <= names:
            return layout
    raise UsageError(
        f"cannot tell the layout of these records (columns: {', '.join(column_names)}); sft reads "
        "messages, conversations (ShareGPT), prompt + completion, or instruction + input + output "
        "(Alpaca): name the columns (--messages-column, --prompt-column, --completion-column) or "
        "pass --sft-format"
    )


def required_columns(layout: str, columns: Columns) -> dict[str, str]:
    """Column -> the flag that names it, for the layout."""
    if layout == "messages":
        return {columns.messages or "messages": "--messages-column"}
    if layout == "sharegpt":
        return {columns.messages or "conversations": "--messages-column"}
    if layout == "prompt-completion":
        return {
            columns.prompt or "prompt": "--prompt-column",
            columns.completion or "completion": "--completion-column",
        }
    return {
        columns.prompt or "instruction": "--prompt-column",
        columns.completion or "output": "--completion-column",
    }


def to_messages(record: dict, layout: str, columns: Columns) -> list[dict[str, str]]:
    """One record as [{role, content}, ...], or BadRecord naming what is wrong."""
    if layout == "messages":
        messages = [
            _message(turn, "role", "content", None) for turn in _turns(record, columns.messages or "messages")
        ]
    elif layout == "sharegpt":
        turns = _turns(record, columns.messages or "conversations")
        messages = [_message(turn, "from", "value", SHAREGPT_ROLES) for turn in turns]
    elif layout == "prompt-completion":
        messages = _as_turns(record.get(columns.prompt or "prompt"), "user", "prompt")
        messages += _as_turns(record.get(columns.completion or "completion"), "assistant", "completion")
    else:  # alpaca: the instruction and its optional input make the user turn
        instruction = _text(record.get(columns.prompt or "instruction"), "instruction")
        extra = record.get("input")
        if extra is not None and not isinstance(extra, str):
            raise BadRecord("input is not a string")
        user = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
        messages = [
            {"role": "user", "content": user},
            {"role": "assistant", "content": _text(record.get(columns.completion or "output"), "output")},
        ]
    if not any(m["role"] == "assistant" for m in messages):
        raise BadRecord("no assistant turn to learn from")
    return messages


def _turns(record: dict, column: str) -> list:
    turns = record.get(column)
    if not isinstance(turns, list) or not turns:
        raise BadRecord(f"'{column}' is empty or not a list of turns")
    return turns


def _message(turn: Any, role_key: str, content_key: str, role_names: dict | None) -> dict[str, str]:
    if not isinstance(turn, dict):
        raise BadRecord("a turn is not an object")
    role = turn.get(role_key)
    role = role_names.get(role) if role_names is not None else role
    if role not in ROLES:
        raise BadRecord(f"unknown role '{turn.get(role_key)}' (use system, user or assistant)")
    content = turn.get(content_key)
    if not isinstance(content, str):
        raise BadRecord(f"the content of a {role} turn is not a string")
    return {"role": role, "content": content}


def _as_turns(value: Any, role: str, what: str) -> list[dict[str, str]]:
    """A prompt or completion: a string (one turn) or a list of messages (TRL's conversational form)."""
    if isinstance(value, list):
        if not value:
            raise BadRecord(f"the {what} is an empty list")
        return [_message(turn, "role", "content", None) for turn in value]
    return [{"role": role, "content": _text(value, what)}]


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRecord(f"the {what} is {'empty' if isinstance(value, str) else 'not a string'}")
    return value


def chat_template_source(spec: str | None) -> str | None:
    """--chat-template: 'chatml' or a Jinja file; None keeps the model's own."""
    if spec is None:
        return None
    if spec == "chatml":
        return CHATML_TEMPLATE
    path = Path(spec)
    if not path.is_file():
        raise UsageError(f"--chat-template '{spec}' is neither 'chatml' nor a Jinja file; check the path")
    return path.read_text(encoding="utf-8")


def use_chat_template(tokenizer, spec: str | None, model: str) -> None:
    """Give the tokenizer the template to render with (saved with it into the run dir, so
    `generate --chat` and `serve` render the same way)."""
    source = chat_template_source(spec)
    if source is not None:
        tokenizer.chat_template = source
        if spec == "chatml":
            missing = [t for t in CHATML_TOKENS if t not in tokenizer.get_vocab()]
            if missing:  # new special tokens the model's embeddings must grow for
                tokenizer.add_special_tokens({"additional_special_tokens": missing})
            if tokenizer.eos_token is None:
                tokenizer.eos_token = "<|im_end|>"
    if not tokenizer.chat_template:
        raise UsageError(
            f"model '{model}' has no chat template; pass --chat-template chatml (or a Jinja file)"
        )


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    cut: bool = False  # replies dropped from the end to fit --max-length


def encode_conversation(
    tokenizer, messages: list[dict[str, str]], max_length: int, train_on_prompt: bool = False
) -> Encoded | None:
    """Token ids and labels (-100 where the loss does not train) of one conversation; None
    when its first assistant reply does not end within `max_length` tokens."""
    ids, trained, turn_ends = assistant_mask(tokenizer, messages)
    cut = False  # whole replies dropped (not just what follows the last end-of-turn)
    if len(ids) > max_length:
        fitting = [end for end in turn_ends if end <= max_length]
        if not fitting:
            return None
        cut = len(fitting) < len(turn_ends)
        ids, trained = ids[: fitting[-1]], trained[: fitting[-1]]
    labels = (
        list(ids)
        if train_on_prompt
        else [t if keep else IGNORE for t, keep in zip(ids, trained, strict=True)]
    )
    return Encoded(list(ids), labels, cut=cut)


def assistant_mask(tokenizer, messages) -> tuple[list[int], list[bool], list[int]]:
    """(token ids, trained per token, token index just past each assistant turn) of the
    rendered conversation. From the template's {% generation %} markers when it has them;
    else by rendering prefixes: an assistant turn is what the conversation up to it adds
    after the generation prompt, through its end-of-turn token."""
    if GENERATION_MARKER.search(tokenizer.chat_template or ""):
        return _mask_from_markers(tokenizer, messages)
    return _mask_from_prefixes(tokenizer, messages)


def _mask_from_markers(tokenizer, messages):
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids = list(out["input_ids"])
    trained = [bool(m) for m in out["assistant_masks"]]
    ends = [
        i + 1 for i in range(len(trained)) if trained[i] and (i + 1 == len(trained) or not trained[i + 1])
    ]
    return ids, trained, ends


def _render(tokenizer, messages, generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )
    except Exception as exc:  # the template's own raise_exception (e.g. roles out of order)
        raise BadRecord(
            f"the chat template refused it: {str(exc).splitlines()[0] if str(exc) else exc}"
        ) from exc


def _mask_from_prefixes(tokenizer, messages):
    text = _render(tokenizer, messages, False)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:index], True)
        through = _render(tokenizer, messages[: index + 1], False)
        if not (text.startswith(through) and through.startswith(before)):
            raise BadRecord(
                "the chat template does not render it as the sum of its turns, so the assistant's "
                "tokens cannot be found (pass --train-on-prompt, or a --chat-template with "
                "{% generation %} markers)"
            )
        reply = through[len(before) :]
        spans.append((len(before), len(before) + len(reply.rstrip())))  # through end-of-turn, not "\n"
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    trained = [any(s < end and e > start for start, end in spans) for s, e in offsets]
    ends = []
    for _start, end in spans:
        inside = [i for i, (s, e) in enumerate(offsets) if s < end and e > _start]
        if inside:
            ends.append(inside[-1] + 1)
    return list(ids), trained, ends


def marked_example(tokenizer, input_ids: list[int], labels: list[int]) -> str:
    """The rendered text with the trained tokens inside [[ ]] (the log and the model card)."""
    pieces, inside = [], False
    for token, label in zip(input_ids, labels, strict=True):
        trained = label != IGNORE
        if trained != inside:
            pieces.append("[[" if trained else "]]")
            inside = trained
        pieces.append(tokenizer.decode([token]))
    if inside:
        pieces.append("]]")
    return "".join(pieces)
