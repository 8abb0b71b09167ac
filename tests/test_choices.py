"""Every string choice has one table: argparse's `choices=` and help, the config schema's enums, the dispatch and the
error for an unknown name all come from it, so none can drift from the others."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shears_nncf.cli import build_parser
from shears_nncf.config import PRECISIONS
from shears_nncf.data.prompts import TRUNCATIONS
from shears_nncf.errors import ShearsError
from shears_nncf.evaluation import PROMPT_STYLES
from shears_nncf.evaluation.stage import SCORINGS
from shears_nncf.export import WEIGHT_FORMATS
from shears_nncf.nls.space import NAMED
from shears_nncf.nls.quantization_aware import BACKUP_MODES, MODES as QUANTIZATION_MODES
from shears_nncf.pipeline import EVALUATE_ON
from shears_nncf.protocol import PROTOCOLS
from shears_nncf.search import COSTS, METRICS, STRATEGIES
from shears_nncf.sparsity import ALLOCATIONS, METHODS

SCHEMA = Path(__file__).resolve().parents[1] / "shears_nncf" / "schema" / "nncf_config.schema.json"
REGISTRIES = {"STRATEGIES": STRATEGIES, "METRICS": METRICS, "COSTS": COSTS, "WEIGHT_FORMATS": WEIGHT_FORMATS,
              "METHODS": METHODS, "PROMPT_STYLES": PROMPT_STYLES, "SCORINGS": SCORINGS, "NAMED": NAMED,
              "TRUNCATIONS": TRUNCATIONS, "PROTOCOLS": PROTOCOLS, "ALLOCATIONS": ALLOCATIONS}
# (command, flag, its table). Every flag whose value is a name of a table.
FLAGS = [
    ("search", "--strategy", STRATEGIES), ("search", "--metric", METRICS), ("search", "--cost", COSTS),
    ("search", "--prompt-style", PROMPT_STYLES), ("evaluate", "--prompt-style", PROMPT_STYLES),
    ("evaluate", "--scoring", SCORINGS), ("export", "--weights", WEIGHT_FORMATS), ("sparsify", "--method", METHODS),
    ("sparsify", "--allocation", ALLOCATIONS),
]
# Every enum of the config schema, by its path, and the names it must hold: a new enum fails until it is listed here.
SCHEMA_ENUMS = {
    "shears/protocol": PROTOCOLS,
    "shears/training/truncation": TRUNCATIONS,
    "shears/training/precision": PRECISIONS,
    "shears/quantization/mode": QUANTIZATION_MODES,  # NNCF's CompressWeightsMode names (quantization-aware NLS)
    "shears/quantization/backup": BACKUP_MODES,
    "shears/pipeline/dtype": PRECISIONS,
    "shears/pipeline/evaluate_on/anyOf/0": EVALUATE_ON,
    "shears/pipeline/evaluate_on/anyOf/1/items": EVALUATE_ON,
    # NNCF's names of the evolutionary strategies (informational: --strategy chooses).
    "bootstrapNAS/search/algorithm": [c.name.upper() for c in STRATEGIES.values() if c.handler.endswith(":evolutionary")],
}


def _actions(command: str) -> dict:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {flag: action for action in sub.choices[command]._actions for flag in action.option_strings}


@pytest.mark.parametrize("command, flag, table", FLAGS, ids=[f"{c} {f}" for c, f, _ in FLAGS])
def test_a_flags_choices_and_help_are_its_tables(command, flag, table):
    action = _actions(command)[flag]
    assert list(action.choices) == list(table) and (action.required or action.default in table)
    for choice in table.values():
        assert f"{choice.name}: {choice.help}" in action.help


@pytest.mark.parametrize("command", ["train", "evaluate", "score", "search", "run"])
def test_the_protocol_flags_choices_and_help_are_its_table(command):
    """No default: the handler takes the config's or the super-adapter's protocol (else shears)."""
    action = _actions(command)["--protocol"]
    assert list(action.choices) == list(PROTOCOLS) and action.default is None
    assert action.help.startswith(PROTOCOLS.help() + ". Default: ")


def test_the_subnet_flags_name_the_named_configurations():
    for command in ("evaluate", "extract"):
        assert f"{'|'.join(NAMED)}|FILE.json" in _actions(command)["--subnet"].help


def _enums(node, path=()):
    if isinstance(node, dict):
        if "enum" in node:
            yield "/".join(p for p in path if p != "properties"), node["enum"]
        for key, value in node.items():
            yield from _enums(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _enums(value, path + (str(index),))


def test_the_config_schemas_enums_are_their_tables():
    found = dict(_enums(json.loads(SCHEMA.read_text())["properties"]))
    assert set(found) == set(SCHEMA_ENUMS), "list each enum of the schema with its table in SCHEMA_ENUMS"
    for path, names in found.items():
        assert names == list(SCHEMA_ENUMS[path]), path


def test_the_stage_sections_of_the_schema_spell_no_choice():
    """`shears.pipeline.<stage>` is checked against the stage's declaration, whose choices are the tables."""
    pipeline = json.loads(SCHEMA.read_text())["properties"]["shears"]["properties"]["pipeline"]["properties"]
    for stage in ("sparsify", "train", "search", "extract", "export", "evaluate", "bench"):
        assert set(pipeline[stage]) == {"type", "description"}, stage


@pytest.mark.parametrize("name", sorted(REGISTRIES))
def test_an_unknown_name_is_one_line_listing_the_known_ones(name):
    table = REGISTRIES[name]
    with pytest.raises(ShearsError) as refused:
        table["no-such-name"]
    assert str(refused.value) == f"unknown {table.what} 'no-such-name'; expected one of {', '.join(table)}"
    assert ["a", "list"] not in table and 3 not in table  # a config's odd value is refused, not a crash


@pytest.mark.parametrize("name", sorted(REGISTRIES))
def test_every_handler_imports(name):
    for choice in REGISTRIES[name].values():
        assert choice.handler is None or callable(choice.function), choice.name


def test_the_cli_declares_its_choices_without_importing_torch():
    """The tables sit beside their owners in light modules; `shears --help` must not pay for torch or OpenVINO."""
    code = "import sys, shears_nncf.cli; print(sorted(m for m in ('torch', 'openvino', 'lm_eval', 'pymoo') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
