"""What a sub-adapter is measured by during search: validation accuracy or loss, and its adapter parameters.

The validation subset is fixed and seeded, and disjoint from the test data: for the embedded data the
test files are the tasks' validation splits, so the subset is drawn from the *train* split, leaving out
the records the super-adapter was trained on when the training manifest says which they were. Records set
aside from the training data (shears.training.val_set_size: the reference's 120 for commonsense, carved with
seed 42) are used instead when there are any; training never saw them. `validation_plan` says which applies.
"""

from __future__ import annotations

import random
from typing import Sequence

import torch

from ..errors import ShearsError
from ..protocol import REFERENCE, SHEARS_PROTOCOL, Protocol
from ..nls.space import Config


def adapter_cost(per_rank: Sequence[int]):
    """Adapter parameters of a configuration: each group's rank times its modules' in + out features."""
    return lambda config: float(sum(r * p for r, p in zip(config, per_rank)))


def nncf_macs_cost(supernet):
    """MACs of the whole active subnet as NNCF's BootstrapNAS counts them (its traced input of `input_info` tokens)."""
    handler = supernet.ctrl.multi_elasticity_handler

    def cost(config: Config) -> float:
        supernet.activate(list(config))
        flops, _ = handler.count_flops_and_weights_for_active_subnet()
        return flops / 2

    return cost


def validation_plan(strategy: str, data: str, tasks: list[str] | None, metric: str, protocol: Protocol,
                    val_set_size: int, trained_tasks: list[str] | None) -> str | None:
    """What a search validates on, said in words, or None when it evaluates nothing; a choice the protocol cannot
    make fails here, before anything is loaded (`shears run` asks before its first step).

    Under `reference` the heuristic evaluates nothing, as the reference does. Records set aside from the training
    data (`val_set_size`, run_commonsense.py's 120) mix its tasks, so they are scored by loss (what the reference's
    Trainer would compute on its eval_dataset) unless they are one task's. Where nothing is set aside under
    `reference` (run_math.py, run_gsm8k.py: val_set_size 0, every record trained on) the reference has no validation
    data at all, so a search that evaluates needs a held-out set named with --data. Otherwise --data says: the
    embedded train split minus the records trained on, or the validation split of the named source."""
    from ..data.sources import DEFAULT, MIXTURE

    if protocol.name == REFERENCE and strategy == "heuristic":
        return None
    if val_set_size:
        names = tasks or trained_tasks or []
        if metric != "loss" and (len(names) != 1 or names[0] == MIXTURE):  # accuracy and loglik score records as a task
            raise ShearsError(
                f"--strategy {strategy} validates on the {val_set_size} records set aside from the training data "
                "(shears.training.val_set_size), which mix its tasks; score them with --metric loss (the loss the "
                "reference's Trainer computes on them), name their one task with --tasks, or use --strategy heuristic, "
                "which evaluates nothing")
        return f"{val_set_size} records set aside from the training data (train_test_split, seed 42, as run_commonsense.py)"
    if protocol.name == REFERENCE and data == DEFAULT:
        raise ShearsError(
            f"--strategy {strategy} needs validation data, and the reference protocol sets none aside here "
            "(shears.training.val_set_size 0, as run_math.py and run_gsm8k.py: every record is trained on); name a "
            "held-out set with --data (a JSON file or a folder of <task>/validation.json, records neither trained on "
            "nor tested), set shears.training.val_set_size, or use --strategy heuristic, which evaluates nothing")
    if data == DEFAULT:
        return "the embedded train split, minus the records trained on"
    return f"{data} (its validation split), named with --data as the held-out set"


def validation_records(data: str, tasks: list[str] | None, limit: int | None, seed: int, training: dict | None,
                       val_set_size: int = 0) -> tuple[dict[str, list[dict]], int]:
    """A seeded validation subset per task, and how many of its records the super-adapter was trained on.

    `training` is the super-adapter's `SuperAdapter.training_data`: the data, tasks, limit and seed of the records it
    saw; `val_set_size` how many were set aside from them (then those are the validation records, all of them)."""
    from ..data.sources import DEFAULT, LM_EVAL, load_records, load_training_records

    if val_set_size:
        return _carved_validation(tasks, training, val_set_size), 0

    trained_on_all = False
    if data == DEFAULT:
        by_task = load_records(data, tasks, split="train")
        # "lm-eval" trains on the documents "default" draws (worded as lm-eval poses them): the same ones are left out
        if training and training.get("data") in (DEFAULT, LM_EVAL):
            if training.get("limit") is None:
                trained_on_all = True  # every train record was seen: nothing disjoint is left to draw
            else:
                trained = load_training_records(DEFAULT, training.get("tasks"), training["limit"], training["seed"])
                seen = {_key(r) for r in trained}
                by_task = {name: [r for r in records if _key(r) not in seen] for name, records in by_task.items()}
    else:
        by_task = load_records(data, tasks, split="validation")
    subset = {}
    for name, records in by_task.items():
        records = list(records)
        random.Random(f"{seed}:{name}").shuffle(records)
        subset[name] = records[:limit] if limit is not None else records
    if not any(subset.values()):
        raise ShearsError(f"no validation records in {data!r} for tasks {tasks or 'all'}")
    return subset, sum(len(r) for r in subset.values()) if trained_on_all else 0


def _carved_validation(tasks: list[str] | None, training: dict | None, size: int) -> dict[str, list[dict]]:
    """The records set aside from the training data the manifest names, under their one task's name if they have one."""
    from ..data.sources import carved_validation_records

    if not training or not training.get("data"):
        raise ShearsError("the super-adapter set validation records aside from its training data (val_set_size), "
                          "but its manifest names no training data")
    names = tasks or training.get("tasks") or []
    records = carved_validation_records(training["data"], training.get("tasks"), size)
    return {names[0] if len(names) == 1 else "validation": records}


def _key(record: dict) -> tuple:
    return (record.get("instruction"), record.get("input"), record.get("output"))


class LoglikObjective:
    """Average log-likelihood score (%) of the active sub-adapter: acc_norm (acc where lm-eval defines none),
    ranked by lm-evaluation-harness. Cheap, and far less noisy than generation for small models."""

    metric = "loglik"

    def __init__(self, supernet, tokenizer, records_by_task: dict[str, list[dict]], batch_size: int = 8,
                 prompt_style: str = "lm-eval", protocol: Protocol = SHEARS_PROTOCOL):
        from ..data.lm_eval_documents import task_folder
        from ..evaluation import PROMPT_STYLES, loglik

        self.tasks = loglik.loglik_tasks(list(records_by_task))
        style = PROMPT_STYLES[prompt_style].name
        documents = {task: loglik.record_documents(task, records, style, protocol, source="validation records")
                     for task, records in zip(self.tasks, records_by_task.values())}
        self.supernet = supernet
        self.scorer = loglik.LoglikScorer(loglik.torch_lm(supernet.peft_model, tokenizer, batch_size),
                                          task_folder(documents, style))

    def __call__(self, config: Config) -> float:
        from ..evaluation.harness import headline

        self.supernet.activate(list(config))
        with self.supernet.untraced():
            scores = [headline(self.scorer.score(task)[0]) for task in self.tasks]
        return 100.0 * sum(scores) / len(scores)


class AccuracyObjective:
    """Average task accuracy (%) of the active sub-adapter, generated and scored by the evaluation harness."""

    metric = "accuracy"

    def __init__(self, supernet, tokenizer, records_by_task: dict[str, list[dict]], batch_size: int = 8,
                 protocol: Protocol = SHEARS_PROTOCOL):
        from ..evaluation.generation import TorchGenerator

        self.supernet = supernet
        self.records_by_task = records_by_task
        self.protocol = protocol
        self.generator = TorchGenerator(supernet.peft_model, tokenizer, batch_size=batch_size, progress=False,
                                        protocol=protocol)

    def __call__(self, config: Config) -> float:
        from ..evaluation.harness import evaluate

        self.supernet.activate(list(config))
        with self.supernet.untraced():  # NNCF's per-op tracing would wrap every generated token
            return 100.0 * evaluate(self.generator, self.records_by_task, protocol=self.protocol)["average"]


class LossObjective:
    """Mean cross-entropy of the responses (the training loss) of the active sub-adapter: cheaper than generating."""

    metric = "loss"

    def __init__(self, supernet, tokenizer, records_by_task: dict[str, list[dict]], max_length: int, batch_size: int = 8,
                 protocol: Protocol = SHEARS_PROTOCOL, truncation: str | None = None):
        from ..data.prompts import tokenize_for_training

        records = [r for records in records_by_task.values() for r in records]
        # The responses' loss in the protocol's training prompt, whatever the protocol trains on, cut as training cut.
        self.examples, _ = tokenize_for_training(records, tokenizer, max_length, protocol=protocol, truncation=truncation)
        self.supernet = supernet
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.batch_size = batch_size

    @torch.inference_mode()
    def __call__(self, config: Config) -> float:
        self.supernet.activate(list(config))
        with self.supernet.untraced() as model:
            total, count = self._sum_losses(model.eval())
        if count == 0:
            raise ShearsError("the validation records have no response tokens to score")
        return total / count

    def _sum_losses(self, model) -> tuple[float, int]:
        device = next(model.parameters()).device
        total, count = 0.0, 0
        for start in range(0, len(self.examples), self.batch_size):
            batch = self.examples[start:start + self.batch_size]
            width = max(len(e["input_ids"]) for e in batch)
            ids = torch.tensor([e["input_ids"] + [self.pad_id] * (width - len(e["input_ids"])) for e in batch], device=device)
            mask = torch.tensor([e["attention_mask"] + [0] * (width - len(e["input_ids"])) for e in batch], device=device)
            labels = torch.tensor([e["labels"] + [-100] * (width - len(e["labels"])) for e in batch], device=device)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            targets = labels[:, 1:]
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                                     ignore_index=-100, reduction="sum")
            total += loss.item()
            count += int((targets != -100).sum())
        return total, count
