"""The package's shape: no import cycle, and data flows one way through the stages.

Every `import` of a `shears_nncf` module is read from the source (function-level imports included, since
the CLI imports its stages lazily), so a test fails as soon as a module reaches into a later stage.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "shears_nncf"

# model -> sparsify -> nls -> search -> export -> evaluate/bench, with the common base below them and the
# front ends (CLI, pipeline, public API) above. A module may import its own layer or a lower one. Scoring
# (prompting, generation, answer extraction, log-likelihood) is what the search and the evaluate stage share,
# so it sits below the search; the evaluate stage itself (its command, the OpenVINO back end) comes last.
# A module belongs to the layer of its longest listed prefix.
LAYERS = [
    ("errors", "choices", "artifacts", "tables", "gguf_tokenizer", "models", "config", "nncf_torch", "protocol", "distributed", "data"),
    ("sparsity",),
    ("nls",),
    ("evaluation",),
    ("search",),
    ("export",),
    ("evaluation.cli", "evaluation.stage", "evaluation.openvino_backend", "bench", "generate"),
    ("stages", "steps", "pipeline", "cli", "__main__", "__init__"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def layer(module: str) -> int:
    matches = [(len(prefix), index) for index, names in enumerate(LAYERS) for prefix in names
               if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"module {module} is in no layer; add it (or its package) to LAYERS"
    return max(matches)[1]


def imports(path: Path) -> set[str]:
    """The shears_nncf modules one file imports, as dotted names relative to the package."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("shears_nncf"):
                target = node.module.removeprefix("shears_nncf").lstrip(".")
            else:
                continue
            for alias in node.names:  # `from . import x` may name a submodule
                candidate = f"{target}.{alias.name}" if target else alias.name
                found.add(candidate if _exists(candidate) else target)
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("shears_nncf.") for a in node.names if a.name.startswith("shears_nncf.")}
    return {name for name in found if name and name != module}


def _exists(module: str) -> bool:
    path = PACKAGE.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def test_every_module_belongs_to_a_layer():
    for module in graph():
        layer(module)


def test_no_module_imports_a_later_stage():
    wrong = [f"{a} imports {b}" for a, targets in graph().items() for b in targets if layer(b) > layer(a)]
    assert not wrong, "earlier stages must not import later ones:\n" + "\n".join(sorted(wrong))


def test_there_is_no_import_cycle():
    edges = graph()
    cycles, state = [], {}

    def visit(module, stack):
        state[module] = "open"
        for target in sorted(edges.get(module, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_import_reader_sees_relative_and_function_level_imports():
    edges = graph()
    assert "data.tasks" in edges["data.sources"]  # `from .tasks import ...` at module level
    assert "nls.supernet" in edges["search.stage"]  # imported inside a function


# Each stage folder is read and written only by the module that owns its format (ARCHITECTURE.md, "Stage folders");
# every other module goes through that module's folder object. artifacts.py holds the primitives.
MANIFEST_OWNERS = {
    "artifacts", "sparsity.api", "nls.folder", "search.run", "export.sub_adapter", "export.merge", "export.openvino",
}
MANIFEST_NAMES = {"read_manifest", "write_manifest", "MANIFEST"}
# A file name of a stage folder is spelled once, by its owner; others import the constant.
FILE_NAMES = {"adapter_config.json": "nls.folder", "adapter_model.safetensors": "nls.folder",
              "nncf_config.json": "nls.folder", "training_log.json": "nls.folder", "search.json": "search.run",
              "shears_manifest.json": "artifacts"}
BENCHMARKS = PACKAGE.parent / "benchmarks"


def _sources():
    yield from ((module_name(p), p) for p in PACKAGE.rglob("*.py"))
    yield from ((f"benchmarks.{p.stem}", p) for p in BENCHMARKS.glob("*.py"))


def _manifest_uses(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Name) and node.id in MANIFEST_NAMES:
            names.add(node.id)
        elif isinstance(node, ast.alias) and node.name in MANIFEST_NAMES:
            names.add(node.name)
    return names


def test_no_module_reads_a_stage_folders_manifest_but_its_owner():
    wrong = [f"{module} uses {', '.join(sorted(names))}" for module, path in _sources()
             if module not in MANIFEST_OWNERS and (names := _manifest_uses(path))]
    assert not wrong, ("read a stage folder through its owner's object (SparseModel, SuperAdapter, read_search, "
                       "SubAdapter, merged_manifest, OpenVINOModel), not its manifest:\n" + "\n".join(sorted(wrong)))


def test_stage_folder_file_names_are_spelled_only_by_their_owner():
    wrong = []
    for module, path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in FILE_NAMES and FILE_NAMES[node.value] != module:
                wrong.append(f"{module}:{node.lineno} spells {node.value!r} (owned by {FILE_NAMES[node.value]})")
    assert not wrong, "import the owner's constant instead:\n" + "\n".join(wrong)


def test_the_manifest_check_would_catch_a_raw_read(tmp_path):
    offender = tmp_path / "offender.py"
    offender.write_text("from shears_nncf.artifacts import read_manifest\nread_manifest('x', stage='train')['config']\n")
    assert _manifest_uses(offender) == {"read_manifest"}


# The quantization-aware path is NNCF's function-hook API, the one NNCF 3.x keeps: neither it nor a shears module it
# imports may use BootstrapNAS, NNCFNetwork or the legacy tracer (that is shears_nncf.nncf_torch's, which turns it on).
QUANTIZATION_AWARE = "nls.quantization_aware"
LEGACY_NNCF = ("nncf.experimental.torch.nas", "nncf.torch.nncf_network", "nncf.torch.dynamic_graph",
               "nncf.torch.model_creation", "nncf.torch.nncf_module_replacement")


def _legacy_nncf_uses(path: Path) -> set[str]:
    """What one file imports of BootstrapNAS, NNCFNetwork and the legacy tracer (itself or through nncf_torch)."""
    used = {"nncf_torch"} & imports(path) if path.is_relative_to(PACKAGE) else set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            used |= {a.name for a in node.names if a.name == "NNCFNetwork"}
        used |= {name for name in names if name.startswith(LEGACY_NNCF) or name == "shears_nncf.nncf_torch"}
    return used


def test_the_quantization_aware_path_uses_neither_bootstrapnas_nor_legacy_tracing():
    edges, reached, todo = graph(), set(), [QUANTIZATION_AWARE]
    while todo:  # every shears module it imports, directly or not
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo += edges.get(module, ())
    wrong = [f"{m} uses {', '.join(sorted(uses))}" for m in sorted(reached)
             if (uses := _legacy_nncf_uses(PACKAGE.joinpath(*m.split(".")).with_suffix(".py")))]
    assert not wrong, f"{QUANTIZATION_AWARE} must run on NNCF's function hooks alone:\n" + "\n".join(wrong)


def test_the_legacy_nncf_check_would_catch_an_import(tmp_path):
    offender = tmp_path / "offender.py"
    offender.write_text("from shears_nncf import nncf_torch\nfrom nncf.torch.nncf_network import NNCFNetwork\n"
                        "import nncf.experimental.torch.nas.bootstrapNAS\n")
    assert _legacy_nncf_uses(offender) == {"shears_nncf.nncf_torch", "NNCFNetwork", "nncf.torch.nncf_network",
                                           "nncf.torch.nncf_network.NNCFNetwork", "nncf.experimental.torch.nas.bootstrapNAS"}


def test_every_cli_handler_is_a_thin_adapter_over_its_stage_function():
    """A command's handler builds the stage's typed config from its flags and calls the stage function (the Python
    API), at most 25 lines: the stage's work lives where a Python user can call it."""
    import inspect

    from shears_nncf.stages import STAGES

    long = {name: n for name, stage in STAGES.items() if (n := len(inspect.getsourcelines(stage.function)[0])) > 25}
    assert not long, f"handlers over 25 lines: {long}"
