"""ARCHITECTURE.md names only what exists: every path it names is in the repository, every module of its stages
table is a module of the package, and every ``module.name`` it names is an attribute of that module.

Run: .venv/bin/python -m pytest tests/test_architecture_doc.py
"""

from __future__ import annotations

import importlib
import re

from conftest import REPO

TEXT = (REPO / "ARCHITECTURE.md").read_text()
CODE = re.findall(r"`([^`\n]+)`", TEXT)
PACKAGE = REPO / "src" / "lsd_nm"


def _is_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").is_file() or (PACKAGE / name / "__init__.py").is_file()


def test_every_path_it_names_exists():
    paths = [c for c in CODE if "/" in c and not re.search(r"[<*\s]", c) and not c.startswith(("-", "gunpowder/"))]
    assert len(paths) >= 5, paths
    missing = [p for p in paths if not ((REPO / p).exists() or (PACKAGE / p).exists())]
    assert missing == []


def test_every_module_of_the_stages_table_is_a_module():
    rows = [line for line in TEXT.splitlines() if line.startswith("| ") and line.count("|") >= 5]
    modules = {m for row in rows[1:] for m in re.findall(r"`([a-z_0-9/]+)`", row.split("|")[-2])}
    assert len(modules) >= 20, modules
    assert sorted(m for m in modules if not _is_module(m.rstrip("/"))) == []


def test_every_dotted_name_it_names_is_an_attribute_of_its_module():
    dotted = [c for c in CODE if re.fullmatch(r"[a-z_0-9]+\.[A-Za-z_0-9]+", c) and _is_module(c.split(".")[0])]
    assert len(dotted) >= 5, dotted
    absent = [d for d in dotted if not hasattr(importlib.import_module(f"lsd_nm.{d.split('.')[0]}"), d.split(".")[1])]
    assert absent == []
