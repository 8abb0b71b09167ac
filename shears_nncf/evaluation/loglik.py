"""Log-likelihood (ranked-choice) scoring of the commonsense tasks through lm-evaluation-harness.

lm-eval does the scoring; this module only hands it documents, in a task folder that `data.lm_eval_documents`
writes (each task's documents as JSONL in the cache, beside a task YAML that includes lm-eval's own template), so
lm-eval's library and its CLI (`--include_path FOLDER`) score the same thing, offline.

Two wordings (`evaluation.PROMPT_STYLES`): "lm-eval" documents carry the fields of lm-eval's templates (the embedded splits hold
them; LLM-Adapters files are parsed back into them); "llm-adapters" documents are the paper's
prompt with the answer sentences of its training data as choices.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

from .. import distributed
from ..data.lm_eval_documents import lettered_choices, lm_eval_name, olmo_documents
from ..data.tasks import COMMONSENSE, MULTIPLE_CHOICE, resolve_tasks
from ..errors import ShearsError
from ..protocol import SHEARS_PROTOCOL, Protocol

_ANSWER_SENTENCE = "the correct answer is "  # how every LLM-Adapters commonsense output begins


def loglik_tasks(names: list[str]) -> list[str]:
    """Our task names for `names`; only tasks with choices to rank."""
    tasks = resolve_tasks(names)
    for task in tasks:
        if task.kind != MULTIPLE_CHOICE:
            raise ShearsError(f"task {task.name} has free-form answers, nothing to rank: --scoring loglik takes "
                              f"{', '.join(COMMONSENSE)}; score {task.name} with --scoring generate")
    return [task.name for task in tasks]


def source_documents(data: str, tasks: list[str] | None, prompt_style: str,
                     protocol: Protocol = SHEARS_PROTOCOL) -> dict[str, list[dict]]:
    """Each task's documents from `--data` ("default": the embedded validation splits); `tasks` None:
    every commonsense task the source has. `protocol` picks the training template of the llm-adapters wording."""
    from ..data.sources import DEFAULT, load_records

    if data == DEFAULT and prompt_style == "lm-eval":
        return {task: olmo_documents(task) for task in tasks or COMMONSENSE}
    records = load_records(data, tasks, split="test")
    if tasks is None:
        records = {task: task_records for task, task_records in records.items() if task in COMMONSENSE}
        if not records:
            raise ShearsError(f"{data} has none of the tasks --scoring loglik ranks ({', '.join(COMMONSENSE)})")
    return {task: record_documents(task, task_records, prompt_style, protocol, source=data)
            for task, task_records in records.items()}


def record_documents(task: str, records: list[dict], prompt_style: str, protocol: Protocol = SHEARS_PROTOCOL,
                     source: str = "") -> list[dict]:
    """LLM-Adapters records ({"instruction", "answer", ...}) as documents of the given wording."""
    convert = partial(_llm_adapters_document, protocol=protocol) if prompt_style == "llm-adapters" else _PARSERS[task]
    documents = []
    for index, record in enumerate(records):
        try:
            documents.append(convert(record))
        except (KeyError, ValueError) as e:
            raise ShearsError(f"{source or task} ({task}): record {index} does not have LLM-Adapters' {task} wording "
                              f"({e}); expected an instruction like its {task}/test.json") from None
    return documents


class LoglikScorer:
    """Scores one task at a time with lm-eval's `simple_evaluate` on an lm-eval model (`HFLM` and kin)."""

    def __init__(self, lm, folder: Path):
        from lm_eval.tasks import TaskManager

        self.lm = lm
        self.task_manager = TaskManager(include_path=str(folder), include_defaults=False)

    def score(self, task: str, limit: int | None = None) -> tuple[dict, list[dict]] | None:
        """{"acc", "acc_stderr", "acc_norm", "acc_norm_stderr" (where lm-eval defines it), "n"} of the first
        `limit` documents, and each document's own scores ({"doc", "acc", "acc_norm"}, in document order),
        which paired comparisons of two models on the same documents need. Under several processes (see
        `torch_lm`) every process scores its share and only the main one gets the results; the others None."""
        import lm_eval

        name = lm_eval_name(task)
        out = lm_eval.simple_evaluate(model=self.lm, tasks=[name], task_manager=self.task_manager, limit=limit,
                                      log_samples=True, verbosity="WARNING")
        if out is None:  # not rank 0: lm-eval gathered this process's documents there
            return None
        return task_metrics(out, name), document_scores(out["samples"][name])


def task_metrics(out: dict, name: str) -> dict:
    """Our summary of one task from lm-eval's results (its keys are "<metric>,<filter>")."""
    raw = out["results"][name]
    metrics = {}
    for metric in ("acc", "acc_norm"):
        if f"{metric},none" in raw:
            metrics[metric] = raw[f"{metric},none"]
            metrics[f"{metric}_stderr"] = raw[f"{metric}_stderr,none"]
    metrics["n"] = out["n-samples"][name]["effective"]
    return metrics


def document_scores(samples: list[dict]) -> list[dict]:
    """Per-document 0/1 scores from lm-eval's logged samples, in document order."""
    return [{"doc": sample["doc_id"], **{m: int(sample[m]) for m in ("acc", "acc_norm") if m in sample}}
            for sample in sorted(samples, key=lambda sample: sample["doc_id"])]


def torch_lm(model, tokenizer, batch_size: int):
    """lm-eval's HF model around an in-memory model (a PeftModel or a supernet's model too); for an
    OpenVINO IR see `openvino_backend.openvino_lm`.

    In a process group (`distributed.join`) it takes lm-eval's data-parallel path: rank r builds the requests
    of documents r, r + W, ... of the first `limit`, pads to the others' count, and `simple_evaluate` gathers
    every rank's samples and per-document metrics on rank 0. HFLM sets that path up only for a model it loads
    itself on several GPUs (an in-memory model it takes for one process), so the same attributes are set here:
    the rank and world size, and the accelerator its `all_gather` and `barrier` go through."""
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    if distributed.world_size() > 1:
        from accelerate import Accelerator

        lm.accelerator = Accelerator()  # the process group already joined: gloo or NCCL, as the model's device
        lm._rank, lm._world_size = distributed.rank(), distributed.world_size()
    return lm


# ---- documents of LLM-Adapters records


def _match(pattern: str, record: dict) -> re.Match:
    found = re.fullmatch(pattern, record["instruction"].strip(), flags=re.DOTALL)
    if found is None:
        raise ValueError("its instruction does not match")
    return found


def _numbered(word: str, text: str) -> list[str]:
    """The items of "Word1: a Word2: b ..." (one space, a newline or a blank line between them), as written."""
    return re.split(rf"(?:\n\n| |\n)?\b{word}\d+: ", text)[1:]


def _gold(record: dict, word: str, n: int) -> int:
    answer = record["answer"].strip().lower()
    index = int(answer.removeprefix(word)) - 1 if answer.startswith(word) and answer[len(word):].isdigit() else -1
    if not 0 <= index < n:
        raise ValueError(f"answer {record['answer']!r} is not {word}1..{word}{n}")
    return index


def _parse_boolq(record: dict) -> dict:
    question = _match(r".*question: (.*)\n\nAnswer format: true/false", record)[1]
    if record["answer"] not in ("true", "false"):
        raise ValueError(f"answer {record['answer']!r} is not true or false")
    return {"passage": "", "question": question.removesuffix("?"), "label": int(record["answer"] == "true")}


def _parse_piqa(record: dict) -> dict:
    goal, sol1, sol2 = _match(r".*the question: (.*)\n\nSolution1: (.*)\n\nSolution2: (.*)\n\nAnswer format: solution1/solution2", record).groups()
    return {"goal": goal, "sol1": sol1, "sol2": sol2, "label": _gold(record, "solution", 2)}


def _parse_social_i_qa(record: dict) -> dict:
    question, answers = _match(r".*the question: (.*?)\n\n(Answer1: .*)\n\nAnswer format: [a-z0-9/]+", record).groups()
    a, b, c = _numbered("Answer", answers)
    return {"context": question, "question": "", "answerA": a, "answerB": b, "answerC": c,
            "label": str(_gold(record, "answer", 3) + 1)}


def _parse_hellaswag(record: dict) -> dict:
    from lm_eval.tasks.hellaswag.utils import preprocess

    context, endings = _match(r".*the given sentence: (.*?)\n\n(Ending1: .*?)\s*Answer format: [a-z0-9/]+", record).groups()
    choices = [preprocess(e) for e in _numbered("Ending", endings)]
    return {"query": preprocess(context), "choices": choices, "label": _gold(record, "ending", len(choices))}


def _parse_winogrande(record: dict) -> dict:
    sentence, option1, option2 = _match(r".*the given sentence: (.*)\n\nOption1: (.*) Option2: (.*) Answer format: option1/option2", record).groups()
    if "_" not in sentence:
        raise ValueError("its sentence has no blank '_'")
    return {"sentence": sentence, "option1": option1, "option2": option2,
            "answer": str(_gold(record, "option", 2) + 1)}


def _parse_question_answer(field: str):
    def parse(record: dict) -> dict:
        question, answers = _match(r".*the question: (.*?)\n\n(Answer1: .*)\n\nAnswer format: [a-z0-9/]+", record).groups()
        choices = _numbered("Answer", answers)
        return {field: question, **lettered_choices(choices, _gold(record, "answer", len(choices)))}

    return parse


_PARSERS = {
    "boolq": _parse_boolq, "piqa": _parse_piqa, "social_i_qa": _parse_social_i_qa, "hellaswag": _parse_hellaswag,
    "winogrande": _parse_winogrande, "arc_easy": _parse_question_answer("question"),
    "arc_challenge": _parse_question_answer("question"), "openbookqa": _parse_question_answer("question_stem"),
}


def _llm_adapters_document(record: dict, protocol: Protocol) -> dict:
    """The paper's (training) prompt; as choices the answer sentences of the words its "Answer format:" line offers."""
    from ..data.prompts import format_prompt

    words = re.findall(r"Answer format: ([\w/ ]+?)\s*$", record["instruction"].strip())
    if not words:
        raise ValueError("its instruction has no 'Answer format: a/b/...' line")
    choices = [w.strip() for w in words[0].split("/")]
    if record["answer"] not in choices:
        raise ValueError(f"answer {record['answer']!r} is not one of {'/'.join(choices)}")
    return {"prompt": format_prompt(record, with_response=False, protocol=protocol), "choices": [_ANSWER_SENTENCE + w for w in choices],
            "gold": choices.index(record["answer"])}
