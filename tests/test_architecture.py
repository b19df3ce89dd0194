"""The code's shape as docs/architecture.md describes it: every module listed in a layer, no
import cycle, no import from a higher layer, no long function; the README a front door whose
links (and the docs' links) all lead somewhere."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from helpers import ROOT

SRC = ROOT / "src"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
LONGEST_FUNCTION = 60  # lines, decorators and docstring included
README_LIMIT = 12_000  # characters: what a newcomer reads in the first ten minutes
LINK = re.compile(r"\]\(([^)\s]+)\)")


def layers() -> dict[str, int]:
    """Each module's layer, numbered bottom up, as docs/architecture.md lists them."""
    found: dict[str, int] = {}
    layer = -1
    for line in ARCHITECTURE.read_text().splitlines():
        if re.match(r"\*\*\w[\w ]*\*\*:", line):
            layer += 1
            continue
        module = re.match(r"- `(\w+)\.py`:", line)
        # Modules of src/ only: the page also lists the tests' files.
        if module and layer >= 0 and (SRC / f"{module.group(1)}.py").is_file():
            found[module.group(1)] = layer
    return found


def imports(module: str) -> set[str]:
    """The ``src`` modules ``module`` imports, at its top or inside functions."""
    tree = ast.parse((SRC / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "src":
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("src."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("src."))
    return found


MODULES = sorted(path.stem for path in SRC.glob("*.py") if path.stem != "__init__")


def test_every_module_is_listed_in_a_layer():
    assert sorted(layers()) == MODULES


def test_no_module_imports_a_higher_layer():
    layer = layers()
    upward = [
        (module, imported)
        for module in MODULES
        for imported in imports(module)
        if layer[imported] > layer[module]
    ]
    assert upward == []


def test_imports_have_no_cycle():
    graph = {module: imports(module) for module in MODULES}
    cycles = []
    for start in MODULES:
        seen, todo = set(), list(graph[start])
        while todo:
            module = todo.pop()
            if module == start:
                cycles.append(start)
                break
            if module not in seen:
                seen.add(module)
                todo.extend(graph[module])
    assert cycles == []


def test_no_function_is_longer_than_the_limit():
    long = []
    for path in sorted(SRC.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                if node.end_lineno - first + 1 > LONGEST_FUNCTION:
                    long.append(f"{path.name}:{node.name}")
    assert long == []


def test_readme_is_a_front_door():
    assert len((ROOT / "README.md").read_text()) < README_LIMIT


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but - and _ dropped, spaces to -."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {_anchor(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "experiments").glob("*/STUDY.md")),
]


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not followed here
            continue
        where, _, anchor = target.partition("#")
        file = (page.parent / where).resolve() if where else page
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in _anchors(file)):
            broken.append(target)
    assert broken == []


def test_every_docs_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    unlinked = [p.name for p in (ROOT / "docs").glob("*.md") if f"docs/{p.name}" not in readme]
    assert unlinked == []
