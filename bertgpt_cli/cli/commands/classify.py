"""`bgcli classify`: label texts with a fine-tuned classifier (engine: inference/classify.py)."""

from __future__ import annotations

from ...inference import classify
from ...io.output import RecordWriter
from ...serving.client import remote_or_local

NAME = "classify"
HELP = "Label each text with a fine-tuned classifier (a `bgcli finetune` run dir or a Hub id)."
EXAMPLES = (
    'bgcli classify -m runs/rt "a gorgeous, witty movie"',
    "cat reviews.jsonl | bgcli classify -m runs/rt --all-scores | jq -c '{id, label: .label, scores}'",
    "bgcli classify -m runs/rt -i reviews.txt --format tsv > labels.tsv",
    "bgcli classify -m runs/nli -i pairs.tsv   # sentence pairs: text<TAB>text_pair",
)
CONFIG = classify.ClassifyConfig


def run(config: classify.ClassifyConfig) -> None:
    classify.validate(config)
    records = classify.input_records(config)
    writer = RecordWriter(config.format, text_key="label", table_shows_input=True)
    if remote_or_local(NAME, config, records, writer, window=classify.window(config)):
        return
    classify.process(config, records, writer)
