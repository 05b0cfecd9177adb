"""docs/architecture.md stays true: every module named, every scheme placed, no long file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "multipos"
DOC = ROOT / "docs" / "architecture.md"
MAX_LINES = 400


def _modules() -> list[Path]:
    return sorted(p.relative_to(PACKAGE) for p in PACKAGE.rglob("*.py"))


def _tree_entries() -> set[str]:
    """Module paths named in the doc's tree block, e.g. ``vision/vit.py``."""
    text = DOC.read_text()
    tree = text.split("## The tree", 1)[1].split("```", 2)[1]
    entries: set[str] = set()
    folder = ""
    for line in tree.splitlines():
        match = re.match(r"^( *)(\S+)", line)
        if match is None or match.group(2) == "multipos/":
            continue
        indent, name = len(match.group(1)), match.group(2)
        if name.endswith("/") and indent == 2:
            folder = name
        elif name.endswith(".py"):
            entries.add(name if indent == 2 else folder + name)
    return entries


def test_the_tree_names_every_module_and_nothing_else() -> None:
    on_disk = {p.as_posix() for p in _modules()}
    named = _tree_entries()
    assert on_disk - named == set(), "modules missing from docs/architecture.md"
    assert named - on_disk == set(), "docs/architecture.md names modules that do not exist"


@pytest.mark.parametrize("module", _modules(), ids=lambda p: p.as_posix())
def test_no_module_over_the_line_limit(module: Path) -> None:
    lines = len((PACKAGE / module).read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines (limit {MAX_LINES}): split it"


def test_every_registered_scheme_has_a_home_in_the_doc() -> None:
    pytest.importorskip("timm")
    pytest.importorskip("torch_geometric")
    import multipos.documents
    import multipos.graph
    import multipos.llm
    import multipos.vision

    text = DOC.read_text()
    table = text.split("## Where each scheme lives", 1)[1].split("\n## ", 1)[0]
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([a-z0-9_]+)` \|.*$", table, re.M)}
    names = set(multipos.list_schemes())
    assert names == set(rows), "the scheme table and the registry disagree"
    for name, row in rows.items():
        for path in re.findall(r"`(multipos/[\w/]+\.py)`", row):
            assert (ROOT / path).is_file(), f"{name}: {path} does not exist"
