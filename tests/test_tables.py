"""The one table renderer: aligned columns, the rules, and markdown that keeps every cell in its column."""

from pathlib import Path

from shears_nncf.tables import markdown_table, text_table

PACKAGE = Path(__file__).resolve().parents[1] / "shears_nncf"
HAND_MADE = ('" | ".join(', '"|---', ".ljust(", ".rjust(")  # how a table was rendered by hand


def test_text_columns_are_as_wide_as_their_widest_cell_and_right_aligned_where_asked():
    lines = text_table(("task", "acc (%)", "n"), [("boolq", "61.0", 100), ("piqa", "7.5", 1000)], align="lr")
    assert lines == [
        "task   acc (%)  n   ",
        "boolq     61.0  100 ",
        "piqa       7.5  1000",
    ]
    assert len({len(line) for line in lines}) == 1  # padded, the last column too


def test_text_rules_go_under_the_header_and_above_the_total_row():
    lines = text_table(("task", "count"), [("boolq", "2"), ("gsm8k", "1"), ("average", "3")], align="lr",
                       rule=True, total=True)
    assert lines == [
        "task     count",
        "-------  -----",
        "boolq        2",
        "gsm8k        1",
        "-------  -----",
        "average      3",
    ]
    assert text_table(("a", "b"), [("1", "2")]) == ["a  b", "1  2"]  # no rule unless asked


def test_markdown_table_escapes_a_pipe_so_the_row_keeps_its_columns():
    lines = markdown_table(["model", "average ± s.e."], [["sparse | 50%", "50.0 ± 3.1"], ("dense", 55)])
    assert lines == [
        "| model | average ± s.e. |",
        "|---|---|",
        r"| sparse \| 50% | 50.0 ± 3.1 |",
        "| dense | 55 |",
    ]
    assert markdown_table(["stage", "seconds"], {}.items()) == ["| stage | seconds |", "|---|---|"]


def test_no_other_module_of_the_package_renders_a_table_by_hand():
    found = [f"{path.relative_to(PACKAGE)}: {sign}" for path in sorted(PACKAGE.rglob("*.py")) if path.name != "tables.py"
             for sign in HAND_MADE if sign in path.read_text()]
    assert not found, "render tables with shears_nncf.tables:\n" + "\n".join(found)
