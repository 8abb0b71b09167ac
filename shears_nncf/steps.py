"""Steps: a stage called with its options, keyed by everything it depends on, skipped when it is up to date.

`shears run` and the benchmark studies (`benchmarks/reproduce_small.py`, `deployment_choice.py`,
`nls_vs_lora.py`) declare their work as steps and run them through one `StepRunner`. A step's *key* hashes
its options, the content of every input file it names that no earlier step wrote (data, calibration, a
config, the user's files behind a named data source; digests cached by size and modification time) and, for a
path inside an earlier step's product, that step's key: a step reads from the steps whose products it names. Each
step leaves a record, `steps/<name>.json` (its key, its command line, whether it completed, its seconds), one
file per step so that several worker processes never write the same file. A step is skipped when its
product exists and its record says it completed under the same key: an interrupted run resumes where it
stopped (an interrupted training from its checkpoint), and a changed setting or input reruns exactly what
depends on it. Stages write their outputs atomically, so a half-finished step never looks complete.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .artifacts import content_digest, read_json, write_json
from .stages import STAGES

RECORDS = "steps"
DIGESTS = "digests.json"


@dataclass
class Step:
    stage: str  # the name in stages.STAGES: CLI verb, manifest stage and step name alike
    args: argparse.Namespace
    product: Path  # exists only once the step has completed (stages write atomically)
    name: str = ""  # unique within a runner; default: the stage's

    def __post_init__(self):
        self.name = self.name or self.stage

    @property
    def command(self) -> str:
        """The step as a command line one can paste (paths with spaces quoted)."""
        return shlex.join(["shears", *STAGES[self.stage].argv(self.args)])


class StepRunner:
    """Runs steps in the order given, each once per key; `isolate` runs each in its own `shears` process (a study
    of many trainings keeps no memory or threads from one step in the next)."""

    def __init__(self, root: str | Path, label: str = "shears run", isolate: bool = False, index: Path | None = None):
        self.records = Path(root) / RECORDS
        self.label, self.isolate = label, isolate
        self.index = index  # a file listing every step's record as {"stages": {name: record}}, rewritten as they run
        self.keys: dict[str, str] = {}  # of the steps run or skipped so far, by name
        self.products: dict[str, Path] = {}
        digests = self.records / DIGESTS
        self.digests: dict[str, str] = read_json(digests, what="digest cache") if digests.is_file() else {}

    def record(self, name: str) -> dict:
        path = self._record_path(name)
        return read_json(path, what="step record") if path.is_file() else {}

    def plan_keys(self, steps: list[Step]) -> dict[str, str]:
        """The key of every step of a plan, in order, as running them would compute it; nothing runs."""
        for step in steps:
            self.keys[step.name] = self.key(step)
            self.products[step.name] = step.product
        return dict(self.keys)

    def key(self, step: Step) -> str:
        options = {k: v for k, v in sorted(vars(step.args).items())
                   if k not in ("command", *HOW_IT_RUNS) and not (k in ADDED_OPTIONS and v == ADDED_OPTIONS[k])}
        digest = hashlib.sha256(json.dumps(options, default=str).encode())
        for path, producer in self._inputs(step):
            if producer:  # known before the earlier step has run: a plan's keys are known at once
                digest.update(self.keys[producer].encode())
            elif path.exists():
                digest.update(self._digest(path).encode())
        return digest.hexdigest()[:16]

    def producers(self, step: Step) -> set[str]:
        """The earlier steps (of those run or planned so far) whose products `step` reads."""
        return {producer for _, producer in self._inputs(step) if producer}

    def up_to_date(self, step: Step) -> bool:
        """Its product exists and its record says it completed under the key it has now."""
        done = self.record(step.name)
        return step.product.exists() and done.get("key") == self.key(step) and bool(done.get("complete"))

    def needed(self, steps: list[Step], wanted: set[str]) -> list[Step]:
        """Of a plan, the steps to run for the `wanted` ones: those not up to date, and what they read that is not.
        An up-to-date step needs nothing, so a study whose small results are kept (committed) continues on a
        machine that lacks the large intermediate folders they came from."""
        self.plan_keys(steps)
        wanted, run = set(wanted), set()
        for step in reversed(steps):
            if step.name in wanted and not self.up_to_date(step):
                run.add(step.name)
                wanted |= self.producers(step)
        return [step for step in steps if step.name in run]

    def _inputs(self, step: Step) -> list[tuple[Path, str | None]]:
        """Each path among its options other than its own output, with the name of the step that produces it; for a
        named data source, the user's files it reads."""
        from .data.sources import files_read

        inputs = []
        for name, value in sorted(vars(step.args).items()):
            named = files_read(value) if name == "data" and isinstance(value, str) else []
            for path in _paths(value if name != "command" else None) + named:
                if path == step.product or step.product in path.parents:
                    continue
                inputs.append((path, next((n for n, p in self.products.items() if path == p or p in path.parents), None)))
        return inputs

    def run(self, step: Step) -> Path:
        """Run `step` unless it is up to date; returns its product."""
        from .nls.training import checkpoint_dir

        key = self.keys[step.name] = self.key(step)
        self.products[step.name] = step.product
        done = self.record(step.name)
        if self.up_to_date(step):
            print(f"[{self.label}] {step.name}: up to date, skipped", flush=True)
            self._write_index()
            return step.product
        resumed = done.get("key") == key
        if step.stage == "train" and resumed and any(checkpoint_dir(step.product).glob("checkpoint-*")):
            step.args.resume = True  # the same training was interrupted: continue it
        command = step.command
        print(f"[{self.label}] {step.name}: {command}", flush=True)
        earlier = done.get("seconds", 0.0) if resumed else 0.0  # an interrupted step's time adds up over its runs
        self._write(step.name, {"key": key, "command": command, "complete": False, "seconds": earlier})
        start = time.perf_counter()
        if self.isolate:
            subprocess.run([sys.executable, "-m", "shears_nncf", *STAGES[step.stage].argv(step.args)], check=True)
        else:
            STAGES[step.stage].run(step.args)
        self._write(step.name, {"key": key, "command": command, "complete": True,
                                "seconds": round(earlier + time.perf_counter() - start, 1)})
        return step.product

    def _record_path(self, name: str) -> Path:
        return self.records / f"{name.replace(' ', '_').replace('/', '_')}.json"

    def _write(self, name: str, record: dict) -> None:
        write_json(self._record_path(name), record)
        write_json(self.records / DIGESTS, self.digests)
        self._write_index()

    def _write_index(self) -> None:
        if self.index is not None:
            write_json(self.index, {"stages": {step: self.record(step) for step in self.keys}})

    def _digest(self, path: Path) -> str:
        """A file's (or folder's) content digest, recomputed only when a size or modification time changed."""
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        stamp = json.dumps([[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files])
        cache_key = hashlib.sha256(stamp.encode()).hexdigest()
        if cache_key not in self.digests:
            self.digests[cache_key] = content_digest(path)
        return self.digests[cache_key]


def _paths(value) -> list[Path]:
    values = value if isinstance(value, list) else [value]
    return [Path(v) for v in values if isinstance(v, (str, Path)) and str(v)]


# Options that change how a step runs, not what it writes: never part of its key (how often a training saves a
# checkpoint to resume from).
HOW_IT_RUNS = ("save_steps",)
# Options added to a stage after results were recorded under its keys, with the value at which the stage does what it
# did before they existed: left out of the key at that value, so that those results stay valid (a study continues
# instead of redoing them). Any other value is keyed as usual.
ADDED_OPTIONS = {"allocation": "uniform", "damping": 0.01, "block_size": 128, "outlier_threshold": 5.0,
                 "owl_lambda": 0.08}


def step_from_argv(argv: list[str], product: str | Path, name: str = "") -> Step:
    """The step of a `shears` command line (`["train", "--config", ...]`), its options parsed as the CLI parses them."""
    from .cli import build_parser

    args = build_parser().parse_args(argv)
    stage = args.stage.name
    del args.stage
    return Step(stage, args, Path(product), name)
