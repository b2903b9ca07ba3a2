"""Built-in instruction / chat data: ShareGPT V3 conversations and SQuAD v1.1 as
prompt/completion records (`sharegpt`, `squad-instruct[@train|@validation]` data specs)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UsageError
from .assets import sharegpt_file
from .console import info

# The instruction the generative-QA benchmark asks SmolLM2 zero-shot (issue 28); the
# squad-instruct prompts repeat it so the fine-tuned model answers the same question.
SQUAD_INSTRUCTION = "Read the text and answer the question with a short phrase copied from the text."
READ_BLOCK = 1 << 24  # characters decoded per step of the streamed ShareGPT read


def squad_instruct_prompt(context: str, question: str) -> str:
    return f"{SQUAD_INSTRUCTION}\n\nText: {context}\n\nQuestion: {question}"


def squad_as_instructions(squad):
    """SQuAD v1.1 questions (the squad data spec) as prompt/completion: the paragraph and
    question -> the first answer; `references` keeps every accepted answer (eval --generate
    scores against all)."""

    def to_prompt(record):
        answers = record["answers"]["text"]
        return {
            "prompt": squad_instruct_prompt(record["context"], record["question"]),
            "completion": answers[0] if answers else "",
            "references": list(answers),
        }

    return squad.map(to_prompt, remove_columns=squad.column_names)


def load_sharegpt():
    """Every complete conversation of the packaged ShareGPT V3 file. The file is cut off inside
    its last record, so `json.load` fails: records are decoded one by one (streamed, a block of
    characters at a time) and the unfinished tail is dropped, with a count."""
    import datasets

    path = sharegpt_file()
    rows = {"id": [], "conversations": []}
    for record in complete_json_records(path):
        rows["id"].append(str(record.get("id", "")))
        rows["conversations"].append(plain_turns(record.get("conversations")))
    info(f"sharegpt: {len(rows['id']):,} complete conversations read (the file ends inside the next one)")
    return datasets.Dataset.from_dict(rows)


def plain_turns(turns) -> list[dict] | None:
    """Turns as {from, value} strings for Arrow's one schema; a value that is not a string
    becomes None (a bad record for sft, reported there with its number)."""
    if not isinstance(turns, list):
        return None
    return [
        {
            "from": str(turn.get("from")) if isinstance(turn, dict) else None,
            "value": turn.get("value")
            if isinstance(turn, dict) and isinstance(turn.get("value"), str)
            else None,
        }
        for turn in turns
    ]


def complete_json_records(path: Path):
    """The objects of a top-level JSON list, in order, stopping quietly at a record the file
    cuts off (the decoder reads the text a block at a time; a record never spans more than
    what has been read)."""
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8") as handle:
        buffer = handle.read(READ_BLOCK).lstrip()
        if not buffer.startswith("["):
            raise UsageError(f"{path} is not a JSON list of records")
        position, exhausted = 1, False
        while True:
            while position < len(buffer) and buffer[position] in " \t\r\n,":
                position += 1
            if position < len(buffer) and buffer[position] == "]":
                return
            try:
                record, end = decoder.raw_decode(buffer, position)
            except json.JSONDecodeError:
                if exhausted:
                    return  # the cut-off last record
                more = handle.read(READ_BLOCK)
                exhausted = not more
                buffer, position = buffer[position:] + more, 0
                continue
            if end == len(buffer) and not exhausted:  # a number or the like may go on: read more
                more = handle.read(READ_BLOCK)
                exhausted = not more
                buffer, position = buffer[position:] + more, 0
                continue
            position = end
            yield record
