"""benchmarks/common.py: rows appended to RESULTS.md always render as a table (speed itself stays out of tests)."""

import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import common  # noqa: E402


@pytest.fixture
def results(tmp_path, monkeypatch):
    path = tmp_path / "RESULTS.md"
    monkeypatch.setattr(common, "RESULTS", path)
    return path


def test_rows_after_a_note_start_a_new_table_and_rows_after_rows_do_not(results, capsys):
    results.write_text("# Benchmark results\n\n" + common.HEADER + "| a | 1 | | | m |\n\nNote on the row above.\n")
    common.append_rows(["| b | 2 | | | m |"])
    common.append_rows(["| c | 3 | | | m |", "| d | 4 | | | m |"])
    assert results.read_text() == (
        "# Benchmark results\n\n" + common.HEADER + "| a | 1 | | | m |\n\nNote on the row above.\n"
        "\n" + common.HEADER + "| b | 2 | | | m |\n| c | 3 | | | m |\n| d | 4 | | | m |\n"
    )
    assert capsys.readouterr().out.splitlines()[-1] == "| d | 4 | | | m |"


def test_the_repositorys_results_are_tables_with_headers():
    """Every row of benchmarks/RESULTS.md sits in a table that has a header."""
    lines = (REPO / "benchmarks" / "RESULTS.md").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("| 2"):  # a dated row
            j = i
            while lines[j - 1].startswith("|"):
                j -= 1
            assert lines[j].startswith("| date |") and lines[j + 1].startswith("|---"), (i + 1, line[:60])
