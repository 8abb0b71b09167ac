"""The README and docs/ cannot go stale.

- The README stays a front page: at most 200 lines, none longer than 200 characters.
- Every `shears ...` command in a fenced code block of README.md or docs/*.md (also `... -m shears_nncf ...` under a
  launcher) parses with the CLI's own parser; `make` targets the README names exist; the demo command is `make demo`'s.
- The README's Python example imports only the public API and calls it with arguments its signatures accept.
- Results live in benchmarks/*.md: the facts the README's headline quotes are checked there, where they are.
- Every relative link resolves, anchors included.
"""

import ast
import contextlib
import inspect
import io
import re
import shlex
from pathlib import Path

import pytest

import shears_nncf
from shears_nncf.cli import build_parser
from shears_nncf.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
BENCHMARKS = ROOT / "benchmarks"
PAGES = [README, *DOCS]
INTERVAL = re.compile(r"[+-]?\d+\.\d+ \[[+-]?\d+\.\d+, [+-]?\d+\.\d+\]")


def code_blocks(path: Path, languages: tuple[str, ...] | None = None) -> list[tuple[int, list[str]]]:
    """The fenced code blocks of a markdown file: (line number of the first line inside, its lines)."""
    blocks, current, start, language = [], None, 0, ""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fence = re.match(r"^\s*```(\S*)", line)
        if fence and current is None:
            current, start, language = [], number + 1, fence.group(1)
        elif fence:
            if languages is None or language in languages:
                blocks.append((start, current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def logical_lines(start: int, lines: list[str]) -> list[tuple[int, str]]:
    """Lines joined across trailing `\\` continuations, each with the number of its first physical line."""
    joined, pending, first = [], "", start
    for number, line in enumerate(lines, start):
        if not pending:
            first = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append((first, pending + line))
        pending = ""
    if pending:
        joined.append((first, pending))
    return joined


def shears_argv(line: str) -> list[str] | None:
    """The `shears` arguments of a command line (`shears CMD ...`, or `LAUNCHER ... -m shears_nncf CMD ...`), comments
    dropped; None for a line that runs no shears command. A line that cannot be split is returned whole, to fail."""
    if not re.match(r"^\s*shears\s", line) and not re.search(r"(^|\s)-m\s+shears_nncf(\s|$)", line):
        return None
    try:
        words = shlex.split(line, comments=True)
    except ValueError as e:
        raise AssertionError(f"cannot split into words ({e}): {line.strip()}") from None
    if words and words[0] == "shears":
        return words[1:]
    at = next(i for i in range(len(words) - 1) if words[i] == "-m" and words[i + 1] == "shears_nncf")
    return words[at + 2:]


def commands(paths=PAGES) -> list[tuple[str, str, list[str] | None]]:
    """(where, the line as written, its shears arguments) for every shears command in the fenced code blocks; a line
    that cannot be split into words comes with the reason and no arguments."""
    found = []
    for path in paths:
        name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
        for start, lines in code_blocks(path):
            for number, line in logical_lines(start, lines):
                try:
                    argv = shears_argv(line)
                except AssertionError as e:  # kept, so that its test fails with the message
                    found.append((f"{name}:{number}", str(e), None))
                    continue
                if argv is not None:
                    found.append((f"{name}:{number}", " ".join(line.split()), argv))
    return found


def check_parses(where: str, line: str, argv: list[str]) -> None:
    """Fail, quoting the line and argparse's message, unless the CLI's own parser takes `argv`."""
    if argv is None:
        pytest.fail(f"{where}: {line}", pytrace=False)
    message = io.StringIO()
    try:
        with contextlib.redirect_stderr(message), contextlib.redirect_stdout(message):
            args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: this command does not parse:\n    {line}\n{message.getvalue().strip()}", pytrace=False)
    assert args.stage.name == argv[0] and callable(args.stage.function), f"{where}: {line}"


COMMANDS = commands()


def test_the_readme_is_a_front_page_of_at_most_200_lines():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail into docs/"
    long = [f"{i}: {len(line)} characters" for i, line in enumerate(lines, 1) if len(line) > 200]
    assert long == []
    results = README.read_text().split("\n## Results\n", 1)[1].split("\n## ", 1)[0].strip().splitlines()
    assert 2 <= len(results) <= 5 and not [line for line in results if line.startswith("|")]  # a headline, no tables
    linked = set(re.findall(r"\]\((docs/[\w-]+\.md)\)", README.read_text()))
    assert linked == {f"docs/{page.name}" for page in DOCS}  # every docs page is reachable from the README


@pytest.mark.parametrize("where, line, argv", COMMANDS, ids=[where for where, _, _ in COMMANDS])
def test_every_shears_command_in_the_readme_and_docs_parses(where, line, argv):
    check_parses(where, line, argv)


def test_a_command_that_does_not_parse_fails_with_its_line_quoted(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n\n```bash\n# a comment\nshears sparsify --model m \\\n  --ratio 0.5 --no-such-flag --output o\n```\n")
    [(where, line, argv)] = commands([page])
    assert where == "page.md:5" and argv[-1] == "o" and "--no-such-flag" in argv
    with pytest.raises(pytest.fail.Exception, match=r"(?s)page.md:5: this command does not parse:.*--no-such-flag"):
        check_parses(where, line, argv)


def test_commands_are_found_across_continuations_comments_and_launchers():
    found = {where: argv for where, _, argv in COMMANDS}
    demo_generate = [argv for argv in found.values() if argv and argv[:1] == ["generate"] and "runs/demo/openvino" in argv]
    assert demo_generate and "--template" in demo_generate[0]  # the README's three-line `\` command, joined
    assert any(where.startswith("docs/distributed.md") and argv and argv[0] == "train" for where, argv in found.items())


def test_every_command_is_listed_in_the_readme_and_shown_in_a_code_block():
    readme = README.read_text()
    listed = set(re.findall(r"^- `shears ([\w-]+)`", readme, flags=re.M))
    assert listed == set(STAGES), "the README's Commands section has one line per command"
    assert {argv[0] for _, _, argv in COMMANDS if argv} == set(STAGES), "every command has an example in README.md or docs/"


def test_make_targets_named_in_the_readme_exist():
    targets = set(re.findall(r"^([\w.-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    named = set(re.findall(r"\bmake ([a-z][\w-]*)", README.read_text()))
    assert named and named <= targets, sorted(named - targets)


def test_the_demo_command_in_the_readme_is_the_one_make_demo_runs():
    demo = re.search(r"shears run [^\n]+", (ROOT / "Makefile").read_text()).group(0)
    assert demo in README.read_text()


def _signature(function: ast.FunctionDef) -> inspect.Signature:
    a, P = function.args, inspect.Parameter
    positional = [*a.posonlyargs, *a.args]
    defaults = [P.empty] * (len(positional) - len(a.defaults)) + [...] * len(a.defaults)
    params = [P(arg.arg, P.POSITIONAL_ONLY if i < len(a.posonlyargs) else P.POSITIONAL_OR_KEYWORD, default=d)
              for i, (arg, d) in enumerate(zip(positional, defaults))]
    params += [P(a.vararg.arg, P.VAR_POSITIONAL)] if a.vararg else []
    params += [P(arg.arg, P.KEYWORD_ONLY, default=P.empty if d is None else ...) for arg, d in zip(a.kwonlyargs, a.kw_defaults)]
    params += [P(a.kwarg.arg, P.VAR_KEYWORD)] if a.kwarg else []
    return inspect.Signature(params)


def _dataclass_signature(cls: ast.ClassDef) -> inspect.Signature:
    """A dataclass's constructor: its annotated fields in order (ClassVars are not fields)."""
    P = inspect.Parameter
    return inspect.Signature([P(n.target.id, P.POSITIONAL_OR_KEYWORD, default=P.empty if n.value is None else ...)
                              for n in cls.body if isinstance(n, ast.AnnAssign) and "ClassVar" not in ast.unparse(n.annotation)])


def _public_signature(name: str) -> inspect.Signature:
    """The signature of a public verb or config class, read from its module's source (no torch import)."""
    path = Path(shears_nncf.__file__).parent.joinpath(*shears_nncf._VERBS[name].split(".")[1:])
    source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    [node] = [n for n in ast.parse(source.read_text()).body
              if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == name]
    return _signature(node) if isinstance(node, ast.FunctionDef) else _dataclass_signature(node)


def test_the_readme_python_example_uses_the_public_api_as_its_signatures_allow():
    [(_, lines)] = code_blocks(README, ("python",))
    tree = ast.parse("\n".join(lines))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and node.module == "shears_nncf" for alias in node.names}
    assert imported and imported <= set(shears_nncf.__all__), sorted(imported - set(shears_nncf.__all__))
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and
                getattr(n, "module", None) != "shears_nncf"], "the example imports only shears_nncf"
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in imported]
    assert {c.func.id for c in calls} == imported, "every imported verb is called"
    for call in calls:
        try:
            _public_signature(call.func.id).bind(*call.args, **{k.arg: k.value for k in call.keywords})
        except TypeError as e:
            pytest.fail(f"README.md: {ast.unparse(call)}: {e}", pytrace=False)
    assert len(lines) <= 15


# Results: they live in benchmarks/*.md, which the studies write; the README's headline quotes them.

def _table(text: str, header_start: str) -> list[list[str]]:
    """The body rows of the markdown table whose header row starts with `header_start`, as lists of cells."""
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[at + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def _readme_results() -> str:
    return " ".join(README.read_text().split("\n## Results", 1)[1].split("\n## ", 1)[0].split())


def test_results_md_holds_every_row_of_the_study_and_a_verdict_for_every_claim():
    results = (BENCHMARKS / "RESULTS.md").read_text()
    titles = re.findall(r'Row\("[^"]+", "([^"]+)"', (BENCHMARKS / "reproduce_small.py").read_text())
    rows = _table(results, "| row |")
    assert [r[0] for r in rows] == titles and len(titles) == 17  # the study's ROWS, in order
    for row in rows:
        assert all(re.fullmatch(r"\d+\.\d ±\d", cell) for cell in row[1:9]), row  # the eight tasks
        assert re.fullmatch(r"\*\*\d+\.\d\*\* ± \d\.\d", row[9]), row  # the average with its standard error
    verdicts = [r[-1] for r in _table(results, "| claim |")]
    kinds = [re.match(r"\*\*(holds|refuted|inconclusive at this size)\*\*", v).group(1) for v in verdicts]
    counted = (len(kinds), kinds.count("holds"), kinds.count("refuted"), kinds.count("inconclusive at this size"))
    said = re.search(r"Of (\d+) claims, (\d+) hold, (\d+) are refuted and (\d+) stay inconclusive", results).groups()
    assert tuple(map(int, said)) == counted


def test_the_readme_headline_quotes_results_md():
    results = (BENCHMARKS / "RESULTS.md").read_text()
    said = re.search(r"Of (\d+) claims, (\d+) hold, (\d+) are refuted and (\d+) stay inconclusive", results).groups()
    headline = _readme_results()
    total, held, refuted, open_ = re.search(r"of the paper's (\d+) claims (\d+) hold.*?(none|\d+) is refuted, (\d+) stay "
                                            r"inconclusive", headline).groups()
    assert (total, held, "0" if refuted == "none" else refuted, open_) == said
    claims = {r[0]: r for r in _table(results, "| claim |")}
    recovery = claims["Fine-tuning the sparse model recovers part of what pruning cost: LoRA on Wanda 50% beats its zero-shot"]
    assert re.search(r"LoRA (\S+ \[[^]]+\])", headline).group(1) in recovery[2]
    assert re.search(r"Shears (\S+ \[[^]]+\])", headline).group(1) in claims["... and so does Shears (heuristic) on Wanda 50%"][2]


def test_the_readme_headline_quotes_nls_vs_lora_md():
    report = (BENCHMARKS / "NLS_VS_LORA.md").read_text()
    differences = {r[0]: r for r in _table(report, "| question | first - second |")}
    assert set(differences) == {"1. NLS vs LoRA, Wanda 50%", "2. NLS vs LoRA, dense", "3a. heuristic vs maximal",
                                "3b. heuristic vs minimal"}
    question1 = differences["1. NLS vs LoRA, Wanda 50%"]
    headline = _readme_results()
    assert re.search(r"three seeds: (\S+ \[[^]]+\])", headline).group(1) == question1[3]
    assert question1[2] == "3, 3" and question1[5].startswith("**inconclusive") and "inconclusive" in headline
    assert "+2.0 is above the interval" in question1[6] and "+2.0 lies above" in headline


def test_the_readme_headline_quotes_deployment_md():
    report = (BENCHMARKS / "DEPLOYMENT.md").read_text()
    speed = {m.group(1): float(m.group(2)) for m in re.finditer(r"^([\w-]+) \(\w+\)\s+([\d.]+)\s", report, flags=re.M)}
    ratio = re.search(r"fastest \((\d\.\d\d)x the unmerged INT8 adapter\)", _readme_results()).group(1)
    assert f"{speed['mask-aware-merged-int4'] / speed['plain-adapter-int8']:.2f}" == ratio
    assert "sparsity buys no speed" in " ".join(report.split()) and "sparsity buys no speed" in _readme_results()


def test_the_readme_headline_quotes_quantization_md():
    report = (BENCHMARKS / "QUANTIZATION.md").read_text()
    questions = {r[0]: r for r in _table(report, "| question |")}
    trained_vs_ptq = questions["Q1. QA-NLS (mask) beats merged + INT4 PTQ"]
    headline = _readme_results()
    said = re.search(r"scores as INT4 after training \((\S+ \[[^]]+\]), two seeds, (\w+)\)", headline)
    assert said.group(1) == trained_vs_ptq[3] and trained_vs_ptq[2] == "1, 2"
    assert trained_vs_ptq[5].startswith(f"**{said.group(2)}")  # the report's verdict


def test_the_readme_headline_quotes_pruners_md():
    report = (BENCHMARKS / "PRUNERS.md").read_text()
    headline = _readme_results()
    sections = report.split("\n## ")[1:]
    perplexity = [section for section in sections if ": held-out perplexity" in section.split("\n", 1)[0]]
    assert len(perplexity) == 2 and "of both models" in headline
    for section in perplexity:  # SparseGPT, with OWL or not, is the lowest at every ratio
        rows = _table(section, "| method |")
        for column in range(1, len(rows[0]) - 1):
            lowest = min(rows, key=lambda row: float(row[column]))
            assert lowest[0] in ("SparseGPT", "OWL + SparseGPT"), (section.split("\n", 1)[0], column, lowest)
    loglik = {(r[0], r[1]): r for r in _table(report, "| method | sparsity |")}
    assert re.search(r"OWL 70%: (\S+ \[[^]]+\])", headline).group(1) == loglik[("OWL + Wanda", "70%")][3]
    recovered = _table(report, "| method | training loss")
    verdicts = [r[4] for r in loglik.values() if r[3] != "-"] + [r[-1] for r in recovered if r[-2] != "-"]
    assert len(verdicts) == 6 and all(v.startswith("inconclusive") for v in verdicts)  # no pruner told apart


def test_every_interval_the_readme_and_docs_quote_is_one_a_benchmark_report_gives():
    reports = "\n".join(p.read_text() for p in BENCHMARKS.glob("*.md"))
    for page in PAGES:
        quoted = INTERVAL.findall(" ".join(page.read_text().split()))
        assert [q for q in quoted if q not in reports] == [], page.name


def test_no_results_table_is_copied_out_of_the_benchmark_reports():
    for page in PAGES:
        text = page.read_text()
        assert "## Results:" not in text, page.name
        assert not re.search(r"^\| (row|claim|question|deployment) \|", text, flags=re.M), page.name


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for a markdown file's headings."""
    slugs = set()
    for heading in re.findall(r"^#+ (.+)$", path.read_text(), flags=re.M):
        slugs.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return slugs


@pytest.mark.parametrize("page", [*PAGES, ROOT / "ARCHITECTURE.md", *sorted(BENCHMARKS.glob("*.md"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"\w+://", target):
            continue
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        assert path.exists(), f"{page.name}: {target}"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{page.name}: {target}"
