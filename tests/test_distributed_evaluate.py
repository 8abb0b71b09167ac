"""`shears evaluate` on two processes (torchrun, gloo on this CPU) gives the one-process run's results file.

Two tests launch the CLI once each on the tiny LLaMA and compare its results file with an in-process
one-process run of the same command: every example's generation, or every document's scores, must be the
same, and only the main process writes and prints; each also checks that the work was split.
"""

import json
import os
import subprocess
import sys

import pytest

from shears_nncf import distributed
from shears_nncf.cli import main
from shears_nncf.evaluation.generation import TorchGenerator
from test_distributed import REPO, torchrun


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Local files only; the launch gets its own empty cache, so its processes fill lm-eval's task folder."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SHEARS_CACHE", str(tmp_path / "cache"))


# The CLI with lm-eval's model logging, per rank, the documents it is asked to score (DOCS_LOG folder).
LOGGING_DOCUMENTS = """
import json, os, sys
from lm_eval.models.huggingface import HFLM
from shears_nncf.cli import main

loglikelihood = HFLM.loglikelihood

def logged(self, requests, *args, **kwargs):
    with open(os.path.join(os.environ["DOCS_LOG"], f"rank{self.rank}.jsonl"), "a") as f:
        f.write(json.dumps(sorted({(r.task_name, r.doc_id) for r in requests})) + "\\n")
    return loglikelihood(self, requests, *args, **kwargs)

HFLM.loglikelihood = logged
sys.exit(main(sys.argv[1:]))
"""


def launch(args, cache, script=("-m", "shears_nncf"), **env):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SHEARS_CACHE": str(cache), **env}
    done = subprocess.run([*torchrun(script), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_two_processes_generate_every_example_of_one_process_and_skip_the_tasks_already_in_the_file(tiny_llama_dir, tmp_path):
    """5 records a task in batches of 2: rank 0 generates batches 0 and 2, rank 1 batch 1, each padded as in one
    process. piqa is already in the results file (as an interrupted run leaves it), so both processes skip it."""
    args = ["evaluate", "--model", str(tiny_llama_dir), "--tasks", "boolq,piqa", "--limit", "5", "--batch-size", "2",
            "--device", "cpu"]
    assert main([*args, "--output", str(tmp_path / "one.json")]) == 0
    one = json.loads((tmp_path / "one.json").read_text())
    interrupted = {**one, "tasks": {"piqa": one["tasks"]["piqa"]}, "examples": {"piqa": one["examples"]["piqa"]}}
    (tmp_path / "two" / "results.json").parent.mkdir()
    (tmp_path / "two" / "results.json").write_text(json.dumps(interrupted))

    printed = launch([*args, "--output", str(tmp_path / "two" / "results.json")], tmp_path / "launch_cache")

    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two == one
    assert printed.count("piqa: already in") == 1 and printed.count("every example written") == 1  # rank 0 alone prints
    assert [p.name for p in (tmp_path / "two").iterdir()] == ["results.json"]


def test_each_process_generates_only_its_whole_batches_of_the_one_process_batching(tiny_llama_factory, tiny_tokenizer,
                                                                                   monkeypatch):
    """What the launch above cannot see: the work is split. Prompts sorted longest first make batches [1, 3],
    [2, 0], [4]; process 0 of 2 generates the first and the last, process 1 the middle one, each text as one
    process generates it. (The gather is faked here: it hands back this process's texts and no others.)"""
    generator = TorchGenerator(tiny_llama_factory(), tiny_tokenizer, batch_size=2, device="cpu", progress=False)
    prompts = [" ".join(["word"] * n) for n in (3, 9, 5, 7, 1)]
    one = generator.generate(prompts, 4)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "all_gather", lambda texts: [texts, dict.fromkeys(set(range(5)) - set(texts))])
    shares = {}
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "rank", lambda: rank)
        shares[rank] = {i: text for i, text in enumerate(generator.generate(prompts, 4)) if text is not None}
    assert sorted(shares[0]) == [1, 3, 4] and sorted(shares[1]) == [0, 2]
    assert {**shares[0], **shares[1]} == dict(enumerate(one))


def test_two_processes_score_every_document_of_one_process_through_lm_evals_data_parallel_path(tiny_llama_dir, tmp_path):
    """lm-eval gives rank 0 documents 0, 2, 4 and rank 1 documents 1, 3, and gathers their samples on rank 0."""
    args = ["evaluate", "--scoring", "loglik", "--model", str(tiny_llama_dir), "--tasks", "boolq,piqa", "--limit", "5",
            "--batch-size", "2", "--device", "cpu"]
    assert main([*args, "--output", str(tmp_path / "one.json")]) == 0
    (tmp_path / "log").mkdir()
    printed = launch([*args, "--output", str(tmp_path / "two.json")], tmp_path / "launch_cache",
                     ("--no-python", sys.executable, "-c", LOGGING_DOCUMENTS), DOCS_LOG=str(tmp_path / "log"))

    for rank, docs in ((0, [0, 2, 4]), (1, [1, 3])):  # one call per task: each rank scored its share only
        calls = [json.loads(line) for line in (tmp_path / "log" / f"rank{rank}.jsonl").read_text().splitlines()]
        assert calls == [[[f"shears_{task}", doc] for doc in docs] for task in ("boolq", "piqa")]

    one, two = json.loads((tmp_path / "one.json").read_text()), json.loads((tmp_path / "two.json").read_text())
    for task in ("boolq", "piqa"):
        assert [d["doc"] for d in two["examples"][task]] == list(range(5))
        assert two["examples"][task] == one["examples"][task]
        # Means of 0/1 scores are exact; a standard error sums the gathered (rank-ordered) scores in another order.
        assert two["tasks"][task] == pytest.approx(one["tasks"][task], rel=1e-12)
    assert printed.count("wall time") == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".json") == ["one.json", "two.json"]
