"""The code's shape as docs/architecture.md describes it: the page's tree names every module of
src/ and nothing else; every package is in a layer contract of pyproject.toml, and a
layer-breaking import fails `lint-imports` (which `make lint` runs); no long function as the
formatter lays it out, and no hand-packed code; the README a front door whose links (and the
docs' links) all lead somewhere."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from helpers import ROOT

SRC = ROOT / "src"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
LONGEST_FUNCTION = 60  # lines, decorators and docstring included
README_LIMIT = 12_000  # characters: what a newcomer reads in the first ten minutes
LINK = re.compile(r"\]\(([^)\s]+)\)")
HAND_PACKED = re.compile(r"#\s*fmt:\s*(skip|off)")


def modules() -> list[str]:
    """Every module of src/ as the page names it: ``train.py``, ``core/messages.py``."""
    return sorted(
        path.relative_to(SRC).as_posix()
        for path in SRC.rglob("*.py")
        if path.name != "__init__.py" and "__pycache__" not in path.parts
    )


def named_in_page() -> list[str]:
    """The modules the page's tree names (``name.py`` or ``package/name.py`` at a line's start)."""
    text = ARCHITECTURE.read_text()
    tree = re.search(r"```\n(src/\n.*?)```", text, re.S)
    assert tree, "docs/architecture.md has no tree of src/ (a fenced block starting `src/`)"
    return sorted(re.findall(r"^\s+((?:\w+/)?\w+\.py)\b", tree.group(1), re.M))


def test_the_architecture_page_names_every_module_and_no_other():
    assert named_in_page() == modules()


def _contracts() -> list[dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return config["tool"]["importlinter"]["contracts"]


def test_every_package_is_in_the_layer_contract_or_a_tool():
    layers = next(c for c in _contracts() if c["type"] == "layers")["layers"]
    in_layers = {name.strip() for floor in layers for name in floor.split("|")}
    tools = next(c for c in _contracts() if c["type"] == "independence")["modules"]
    top = {f"src.{p.stem}" for p in SRC.glob("*.py") if p.stem != "__init__"}
    packages = {f"src.{p.parent.name}" for p in SRC.glob("*/__init__.py")}
    assert (top | packages) == in_layers | set(tools)


def _lint_imports(tree: Path) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"]
    return subprocess.run(command, cwd=tree, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "module, upward",
    [
        ("data/batches.py", "from src.models import gan"),  # a lower layer imports a higher one
        ("run/training.py", "from src.study import stats"),  # a run imports the sweep machinery
        ("models/gan.py", "from src.evaluation import metrics"),  # siblings must stay apart
        ("core/files.py", "from src.bench import matmul"),  # the harness imports a tool
    ],
)
def test_an_import_that_breaks_a_layer_fails_lint_imports(tmp_path, module, upward):
    """The contracts `make lint` checks, on a copy of the checkout: kept as they are, broken
    by one import."""
    shutil.copytree(SRC, tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    assert _lint_imports(tmp_path).returncode == 0
    path = tmp_path / "src" / module
    path.write_text(f"{upward}  # noqa: F401\n{path.read_text()}")
    broken = _lint_imports(tmp_path)
    assert broken.returncode != 0 and "BROKEN" in broken.stdout, broken.stdout


def test_no_function_is_longer_than_the_limit():
    long = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                if node.end_lineno - first + 1 > LONGEST_FUNCTION:
                    long.append(f"{path.relative_to(SRC)}:{node.name}")
    assert long == []


def test_the_formatter_lays_out_every_line():
    """No formatter-off markers (fmt skip, fmt off): a limit is met by splitting where the
    meaning splits, not by packing lines."""
    packed = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in ("src", "tests", "experiments")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if HAND_PACKED.search(line)
    ]
    assert packed == []


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
