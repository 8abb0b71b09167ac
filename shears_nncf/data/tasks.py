"""The one table of evaluation tasks: how each is scored and how long its answers are.

A new task is one row of `TASKS`. `vocabulary` is what the answer extractor looks for (the
words LLM-Adapters' instructions ask for, or the option letters of AQuA); `max_new_tokens`
follows LLM-Adapters' evaluation scripts (32 tokens for commonsense, 256 for worked math).
`folder` is the task's folder name in the LLM-Adapters repository (`<folder>/test.json`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ShearsError

MATH, OPTION_LETTER, MULTIPLE_CHOICE = "math", "option-letter", "multiple-choice"


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # MATH: last number in the text; OPTION_LETTER: A-E; MULTIPLE_CHOICE: first vocabulary word
    vocabulary: tuple[str, ...]
    max_new_tokens: int
    folder: str
    aliases: tuple[str, ...] = ()


def _words(stem: str, n: int) -> tuple[str, ...]:
    return tuple(f"{stem}{i}" for i in range(1, n + 1))


TASKS: tuple[Task, ...] = (
    Task("boolq", MULTIPLE_CHOICE, ("true", "false"), 32, "boolq"),
    Task("piqa", MULTIPLE_CHOICE, _words("solution", 2), 32, "piqa"),
    Task("social_i_qa", MULTIPLE_CHOICE, _words("answer", 3), 32, "social_i_qa", ("siqa", "socialiqa")),
    Task("hellaswag", MULTIPLE_CHOICE, _words("ending", 4), 32, "hellaswag"),
    Task("winogrande", MULTIPLE_CHOICE, _words("option", 2), 32, "winogrande"),
    Task("arc_easy", MULTIPLE_CHOICE, _words("answer", 5), 32, "ARC-Easy", ("arc_e",)),
    Task("arc_challenge", MULTIPLE_CHOICE, _words("answer", 5), 32, "ARC-Challenge", ("arc_c",)),
    Task("openbookqa", MULTIPLE_CHOICE, _words("answer", 4), 32, "openbookqa", ("obqa",)),
    Task("gsm8k", MATH, (), 256, "gsm8k"),
    Task("svamp", MATH, (), 256, "SVAMP"),
    Task("mawps", MATH, (), 256, "mawps"),
    Task("aqua", OPTION_LETTER, tuple("ABCDE"), 256, "AQuA"),
)

# The eight commonsense tasks of the paper's Table 2; their training splits make the `commonsense` mixture.
COMMONSENSE = tuple(t.name for t in TASKS if t.kind == MULTIPLE_CHOICE)
MATH_TASKS = tuple(t.name for t in TASKS if t.kind != MULTIPLE_CHOICE)


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


_BY_KEY = {_key(n): t for t in TASKS for n in (t.name, t.folder, *t.aliases)}


def _other_names(task: Task) -> tuple[str, ...]:
    return tuple(n for n in (task.folder, *task.aliases) if n != task.name)


def get_task(name: str) -> Task:
    """Look a task up by its name, its LLM-Adapters folder name or an alias (case and '-'/'_' ignored)."""
    task = _BY_KEY.get(_key(name))
    if task is None:
        known = ", ".join(t.name + (f" ({'/'.join(_other_names(t))})" if _other_names(t) else "") for t in TASKS)
        raise ShearsError(f"unknown task {name!r}; known tasks: {known}")
    return task


def resolve_tasks(names: list[str] | None) -> list[Task] | None:
    """Tasks for a list of names; None stays None ("every task the source has"); an empty list is an error."""
    if names is None:
        return None
    if not names:
        raise ShearsError(f"the task list is empty; give task names, e.g. {','.join(COMMONSENSE[:3])}")
    tasks = []
    for name in names:
        task = get_task(name)
        if task not in tasks:
            tasks.append(task)
    return tasks
