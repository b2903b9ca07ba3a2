"""`bgcli eval --task sft --generate`: greedy replies to held-out prompts, scored against the
reference answers with SQuAD's exact match and token F1 (lower case, no punctuation or
articles; the best over a record's references)."""

from __future__ import annotations

from typing import Any

from ..errors import UsageError
from ..io.console import info, warn
from .chat_data import BadRecord, Columns, detect_layout, to_messages

SHOWN_BAD = 10


def prompts_and_references(data, finetune_config) -> tuple[list[list[dict]], list[list[str]]]:
    """Each record's conversation up to its last assistant turn, and the answers that count:
    a `references` column when the data has one (squad-instruct: every accepted answer),
    else that last reply."""
    columns = Columns(
        finetune_config.messages_column, finetune_config.prompt_column, finetune_config.completion_column
    )
    fmt = finetune_config.sft_format
    layout = (
        fmt
        if fmt != "auto"
        else detect_layout(list(data.column_names), columns, data[0] if len(data) else None)
    )
    prompts, references, bad = [], [], 0
    for number, record in enumerate(data, start=1):
        try:
            messages = to_messages(record, layout, columns)
        except BadRecord as exc:
            bad += 1
            if bad <= SHOWN_BAD:
                warn(f"record {number}: {exc}; skipped")
            continue
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        given = record.get("references")
        refs = [r for r in given if isinstance(r, str)] if isinstance(given, list) else []
        prompts.append(messages[:last])
        references.append(refs or [messages[last]["content"]])
    if not prompts:
        raise UsageError("no record has a prompt and a reference answer to score --generate on")
    return prompts, references


def generate_replies(
    model, tokenizer, prompts: list[list[dict]], max_new_tokens: int, batch_size: int
) -> list[str]:
    """Greedy replies, batched with left padding (longest prompts first: little padding)."""
    import torch

    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    replies = [""] * len(encoded)
    model.eval()
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, index in enumerate(rows):
            n = len(encoded[index])
            ids[row, width - n :] = torch.tensor(encoded[index])
            mask[row, width - n :] = 1
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids.to(model.device),
                attention_mask=mask.to(model.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
            )
        for row, index in enumerate(rows):
            replies[index] = tokenizer.decode(out[row, width:], skip_special_tokens=True).strip()
        info(f"generated {min(start + batch_size, len(order))}/{len(order)} replies")
    return replies


def score_replies(replies: list[str], references: list[list[str]]) -> dict[str, Any]:
    from .metrics import load_metric

    squad = load_metric("squad")
    predictions = [{"id": str(i), "prediction_text": r} for i, r in enumerate(replies)]
    golds = [
        {"id": str(i), "answers": {"text": refs, "answer_start": [0] * len(refs)}}
        for i, refs in enumerate(references)
    ]
    return squad.compute(predictions=predictions, references=golds)
