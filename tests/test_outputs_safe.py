"""Nothing of a user's is replaced: every stage that writes refuses an output holding what it did not write
(exit 2, one line, the user's file byte for byte intact, nothing written), replaces it with --overwrite, and
replaces its own earlier output on a rerun, as before."""

import json

import pytest

from conftest import train_tiny_super_adapter
from shears_nncf.artifacts import MANIFEST, atomic_output_dir, check_output, clear_output, published_once, written_by
from shears_nncf.cli import main
from shears_nncf.config import bundled_config
from shears_nncf.errors import ShearsError

THESIS = "three years of work\n".encode() * 50
FILE_STAGES = ("evaluate", "score", "bench")  # their output is a file (results, verdicts, a report)
# Every stage that writes, the `extract --merge` variant included; `run` is in its own tests (a full run is minutes).
STAGES = ("sparsify", "train", "search", "extract", "extract-merge", "export", "evaluate", "score", "bench")
SLOW = ("export", "bench")  # an OpenVINO export, a benchmark subprocess: one real run each


@pytest.fixture(scope="module")
def inputs(tiny_llama_factory, tiny_tokenizer, tmp_path_factory):
    """What the stages read, made once: a base model, a trained super-adapter, training data, predictions."""
    folder = tmp_path_factory.mktemp("inputs")
    train_tiny_super_adapter(tiny_llama_factory(), tiny_tokenizer, folder)  # folder/sparse (the base), folder/super
    records = [{"instruction": f"Is {n} even?", "input": "", "output": f"the answer is {str(n % 2 == 0).lower()}",
                "answer": str(n % 2 == 0).lower()} for n in range(4)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "predictions.jsonl").write_text('{"prediction": "the answer is true", "answer": "true"}\n')
    return folder


def argv(stage: str, inputs, out) -> list[str]:
    """The cheapest command line of `stage` writing to `out`."""
    base, super_adapter = str(inputs / "sparse"), str(inputs / "super")
    return {
        "sparsify": ["sparsify", "--model", base, "--ratio", "0.5", "--method", "magnitude"],
        "train": ["train", "--config", str(bundled_config("demo/smollm2_commonsense")), "--model", base,
                  "--data", str(inputs / "train.jsonl"), "--limit", "2", "--max-steps", "1", "--batch-size", "1",
                  "--grad-accum", "1", "--max-length", "64"],
        "search": ["search", "--super-adapter", super_adapter, "--strategy", "heuristic", "--metric", "loss",
                   "--tasks", "boolq", "--limit", "1", "--batch-size", "1"],
        "extract": ["extract", "--super-adapter", super_adapter],
        "extract-merge": ["extract", "--super-adapter", super_adapter, "--merge"],
        "export": ["export", "--model", base],
        "evaluate": ["evaluate", "--model", base, "--tasks", "boolq", "--limit", "1", "--batch-size", "1"],
        "score": ["score", "--task", "boolq", "--predictions", str(inputs / "predictions.jsonl")],
        "bench": ["bench", base, "--max-new-tokens", "1", "--rounds", "1"],
    }[stage] + ["--json" if stage == "bench" else "--output", str(out)]


def stage_name(stage: str) -> str:
    return stage.removesuffix("-merge")


def users_output(tmp_path, stage: str):
    """Where the user keeps their thesis: a folder holding it, or (for a stage that writes a file) the file itself."""
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    if stage in FILE_STAGES:
        (outputs / "notes.json").write_bytes(THESIS)
        return outputs / "notes.json"
    (outputs / "precious").mkdir()
    (outputs / "precious" / "thesis.txt").write_bytes(THESIS)
    return outputs / "precious"


def assert_untouched(out):
    """The user's file byte for byte, and nothing beside it (no partial folder, no checkpoints)."""
    if out.is_dir():
        assert [p.name for p in out.iterdir()] == ["thesis.txt"]
        assert (out / "thesis.txt").read_bytes() == THESIS
    else:
        assert out.read_bytes() == THESIS
    assert [p.name for p in out.parent.iterdir()] == [out.name]


@pytest.mark.parametrize("stage", [*STAGES, "run"])
def test_an_output_holding_a_users_file_is_refused_in_one_line_and_left_byte_for_byte(stage, inputs, tmp_path, capsys):
    out = users_output(tmp_path, stage)
    command = argv(stage, inputs, out) if stage != "run" else \
        ["run", "--config", str(bundled_config("demo/smollm2_commonsense")), "--output", str(out)]
    assert main(command) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"shears {command[0]}: error: ")
    assert str(out) in errors[0] and "shears did not write" in errors[0] and "--overwrite" in errors[0]
    assert_untouched(out)


@pytest.mark.parametrize("stage", STAGES)
def test_overwrite_replaces_the_users_output_and_a_rerun_replaces_the_stages_own(stage, inputs, tmp_path, capsys):
    out = users_output(tmp_path, stage)
    assert main(argv(stage, inputs, out) + ["--overwrite"]) == 0
    assert written_by(out) == stage_name(stage)
    assert not (out / "thesis.txt").exists() if out.is_dir() else out.read_bytes() != THESIS
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no partial folder or checkpoints left beside it
    if stage in SLOW:
        return
    written = out if stage in FILE_STAGES else out / MANIFEST
    first = written.stat()
    assert main(argv(stage, inputs, out)) == 0  # its own output: replaced without being asked
    again = written.stat()
    assert written_by(out) == stage_name(stage)
    assert (again.st_ino, again.st_mtime_ns) != (first.st_ino, first.st_mtime_ns)


def test_an_output_of_another_stage_is_refused_naming_the_stage_that_wrote_it(inputs, tmp_path, capsys):
    out = tmp_path / "sub"
    assert main(argv("extract", inputs, out)) == 0
    assert main(argv("sparsify", inputs, out)) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "holds the output of `shears extract`" in error and "--overwrite" in error
    assert written_by(out) == "extract"


def test_a_file_output_that_is_a_folder_is_refused_even_with_overwrite(inputs, tmp_path, capsys):
    out = users_output(tmp_path, "sparsify")  # a folder holding the thesis
    assert main(argv("score", inputs, out) + ["--overwrite"]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert_untouched(out)


def test_an_interrupted_search_folder_its_evaluations_alone_is_the_searchs_own_to_resume(tmp_path):
    from shears_nncf.search.run import evaluations_file

    out = tmp_path / "search"
    out.mkdir()
    evaluations_file(out).write_text('{"settings": {}, "records": []}')  # what a search keeps before its manifest
    assert written_by(out) == "search"
    assert check_output(out, "search") is False
    with pytest.raises(ShearsError, match="holds the output of `shears search`"):
        check_output(out, "export")


def test_an_empty_folder_is_a_fine_output(inputs, tmp_path, capsys):
    out = tmp_path / "empty"
    out.mkdir()
    assert main(argv("extract", inputs, out)) == 0
    assert written_by(out) == "extract"


def test_atomic_output_dir_itself_never_replaces_a_folder_shears_did_not_write(tmp_path):
    out = users_output(tmp_path, "sparsify")
    for stage in ("sparsify", None):
        with pytest.raises(ShearsError, match="shears did not write"):
            with atomic_output_dir(out, stage) as tmp:
                (tmp / "weights").write_text("x")
        assert_untouched(out)
    # The user's folder filled while the stage ran is noticed before the swap, too.
    fresh = tmp_path / "outputs" / "fresh"
    with pytest.raises(ShearsError, match="shears did not write"):
        with atomic_output_dir(fresh, "sparsify"):
            fresh.mkdir()
            (fresh / "thesis.txt").write_bytes(THESIS)
    assert [p.name for p in fresh.iterdir()] == ["thesis.txt"]
    assert sorted(p.name for p in fresh.parent.iterdir()) == ["fresh", "precious"]


def test_a_cache_folder_published_while_another_process_filled_it_is_kept_and_the_late_copy_dropped(tmp_path):
    """Two processes converting the same embedded model, or writing the same task folder: the first one published
    is the one every reader sees; it is never swapped out under them, and nothing partial is left beside it."""
    cache = tmp_path / "cache" / "lm_eval_tasks" / "0123abcd"
    reader = None
    with published_once(cache) as late:
        (late / "piqa.jsonl").write_text("late\n")
        with published_once(cache) as first:  # the other process, finishing first
            (first / "piqa.jsonl").write_text("first\n")
        reader = (cache / "piqa.jsonl").open()
    assert reader.read() == "first\n" and (cache / "piqa.jsonl").read_text() == "first\n"
    assert [p.name for p in cache.parent.iterdir()] == ["0123abcd"]
    with pytest.raises(ValueError), published_once(tmp_path / "cache" / "failed") as tmp:
        (tmp / "half").write_text("x")
        raise ValueError("the conversion failed")
    assert sorted(p.name for p in cache.parent.iterdir()) == ["0123abcd"]


def test_a_run_keeps_its_own_folder_to_resume_it_and_clears_a_foreign_one_only_with_overwrite(tmp_path):
    out = users_output(tmp_path, "run")
    with pytest.raises(ShearsError, match="shears did not write"):
        clear_output(out, "run")
    assert_untouched(out)
    assert check_output(out, "run", overwrite=True) is True  # foreign, and --overwrite given: to be replaced
    clear_output(out, "run", overwrite=True)
    assert not out.exists()
    out.mkdir()
    (out / "pipeline.json").write_text('{"stages": {}}')
    (out / "notes.md").write_text("a run folder holds what the run wrote")
    assert written_by(out) == "run" and check_output(out, "run") is False
    clear_output(out, "run")  # its own folder: kept, to be resumed
    assert (out / "notes.md").is_file()


def test_shears_run_overwrite_starts_a_run_folder_in_place_of_the_users(tiny_llama_dir, tmp_path, monkeypatch, capsys):
    import shears_nncf.sparsity.api

    def interrupted(args):  # the first step: what matters is what the run made of its folder before it
        raise KeyboardInterrupt

    out = users_output(tmp_path, "run")
    monkeypatch.setattr(shears_nncf.sparsity.api, "sparsify_command", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["run", "--config", str(bundled_config("demo/smollm2_commonsense")), "--model", str(tiny_llama_dir),
              "--output", str(out), "--overwrite"])
    assert not (out / "thesis.txt").exists() and written_by(out) == "run"


def test_train_refuses_a_checkpoints_folder_beside_its_output_that_holds_a_users_file(inputs, tmp_path, capsys):
    """Training keeps its checkpoints in <output>.checkpoints and removes that folder when it ends."""
    out = tmp_path / "outputs" / "super"
    kept = tmp_path / "outputs" / "super.checkpoints"
    kept.mkdir(parents=True)
    (kept / "thesis.txt").write_bytes(THESIS)
    assert main(argv("train", inputs, out)) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("shears train: error: ") and str(kept) in errors[0]
    assert [p.name for p in kept.iterdir()] == ["thesis.txt"] and (kept / "thesis.txt").read_bytes() == THESIS
    assert not out.exists()
