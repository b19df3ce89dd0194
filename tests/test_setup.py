"""Which Python `make install` builds the venv with (tools/python.sh), run for real: real
interpreters from pyenv, on a PATH that holds nothing else, and real venvs.

Without pyenv's 3.10-3.13 these tests are skipped, saying which is missing; CI sets
``REQUIRE_PYENV=1`` (in .ci/run), where a missing one fails them instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from helpers import ROOT
from packaging.specifiers import SpecifierSet

CHOOSER = ROOT / "tools" / "python.sh"
BASH = shutil.which("bash")
SUPPORTED = ["3.13", "3.12", "3.11"]  # newest first, as the chooser prefers them


def _pyenv_root() -> Path:
    if os.environ.get("PYENV_ROOT"):
        return Path(os.environ["PYENV_ROOT"])
    if shutil.which("pyenv"):
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip()
        if root:
            return Path(root)
    return Path.home() / ".pyenv"


def _find(minor: str) -> Path | None:
    found = sorted((_pyenv_root() / "versions").glob(f"{minor}.*/bin/python"))
    found = [path for path in found if path.parent.parent.name[len(minor) + 1 :].isdigit()]
    return found[-1] if found else None


@pytest.fixture(scope="module")
def pythons() -> dict[str, Path]:
    """pyenv's interpreters of 3.10 (unsupported) to 3.13, by minor version."""
    found = {minor: _find(minor) for minor in ["3.10", *SUPPORTED]}
    missing = [minor for minor, path in found.items() if path is None]
    if missing:
        message = f"pyenv has no Python {', '.join(missing)} under {_pyenv_root()}/versions"
        if os.environ.get("REQUIRE_PYENV") == "1":
            pytest.fail(f"REQUIRE_PYENV=1 but {message}")
        pytest.skip(message)
    return found


def _bin(tmp_path: Path, **links: Path | str) -> Path:
    """A folder for PATH holding only ``name -> interpreter`` symlinks; a str is a script."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for name, target in links.items():
        entry = folder / name.replace("_", ".")
        if isinstance(target, str):
            entry.write_text(target)
            entry.chmod(0o755)
        else:
            entry.symlink_to(target)
    return folder


def choose(path: Path, *args: str, python: str = "", cwd: Path | None = None):
    """Run the chooser as the Makefile does, with PATH = ``path`` alone."""
    env = {"PATH": str(path), "HOME": str(path.parent), "PYTHON": python}
    return subprocess.run(
        [BASH, str(CHOOSER), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def version_of(interpreter: str) -> str:
    code = 'import sys; print("%d.%d" % sys.version_info[:2])'
    return subprocess.run([interpreter, "-c", code], capture_output=True, text=True).stdout.strip()


def one_error_line(result) -> str:
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# A pyenv shim of a version that is not active: on PATH, but it does not run.
SHIM = '#!/bin/sh\necho "pyenv: ${0##*/}: command not found" >&2\nexit 127\n'


def test_supported_versions_are_those_pyproject_allows_and_this_python_is_one():
    spec = SpecifierSet(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    )
    listed = subprocess.run([BASH, str(CHOOSER), "--supported"], capture_output=True, text=True)
    assert listed.stdout.split() == SUPPORTED
    assert all(f"{minor}.0" in spec for minor in SUPPORTED)
    assert "3.10.0" not in spec and "3.14.0" not in spec
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in SUPPORTED


def test_the_newest_supported_python_on_path_wins(tmp_path, pythons):
    path = _bin(
        tmp_path,
        python3_11=pythons["3.11"],
        python3_12=pythons["3.12"],
        python3_13=pythons["3.13"],
        python3=pythons["3.10"],
    )
    result = choose(path, str(tmp_path / "venv"))
    assert result.returncode == 0, result.stderr
    assert version_of(result.stdout.strip()) == "3.13"


def test_a_shim_that_does_not_run_is_passed_over(tmp_path, pythons):
    path = _bin(tmp_path, python3_13=SHIM, python3_12=pythons["3.12"], python3_11=pythons["3.11"])
    result = choose(path, str(tmp_path / "venv"))
    assert result.returncode == 0, result.stderr
    assert version_of(result.stdout.strip()) == "3.12"


def test_python3_is_taken_when_it_is_supported(tmp_path, pythons):
    path = _bin(tmp_path, python3=pythons["3.11"])
    result = choose(path, str(tmp_path / "venv"))
    assert result.returncode == 0 and version_of(result.stdout.strip()) == "3.11"


def test_no_supported_python_is_one_line_naming_the_versions_and_PYTHON(tmp_path, pythons):
    path = _bin(tmp_path, python3=pythons["3.10"], python3_13=SHIM)
    line = one_error_line(choose(path, str(tmp_path / "venv")))
    assert "runs on Python 3.11, 3.12 or 3.13" in line
    assert "python3.13 does not run" in line and "python3 is 3.10" in line
    assert "PYTHON=" in line


def test_PYTHON_overrides_the_search(tmp_path, pythons):
    path = _bin(tmp_path, python3_13=pythons["3.13"])
    result = choose(path, str(tmp_path / "venv"), python=str(pythons["3.11"]))
    assert result.returncode == 0 and version_of(result.stdout.strip()) == "3.11"


@pytest.mark.parametrize("given", ["3.10", "shim", "missing"])
def test_an_unusable_PYTHON_is_one_line(tmp_path, pythons, given):
    path = _bin(tmp_path, python3_13=pythons["3.13"], python3_12=SHIM)
    python = {"3.10": str(pythons["3.10"]), "shim": "python3.12", "missing": "python9"}[given]
    line = one_error_line(choose(path, str(tmp_path / "venv"), python=python))
    expected = {
        "3.10": "is Python 3.10; this project runs on Python 3.11, 3.12 or 3.13",
        "shim": "does not run (pyenv: python3.12: command not found)",
        "missing": "is not on PATH",
    }[given]
    assert line.startswith(f"error: PYTHON={python} ") and expected in line
    assert "point PYTHON= at" in line


def _venv(tmp_path: Path, python: Path) -> Path:
    venv = tmp_path / "venv"
    subprocess.run([str(python), "-m", "venv", "--without-pip", str(venv)], check=True)
    return venv


def test_an_existing_supported_venv_is_kept_over_a_newer_python(tmp_path, pythons):
    venv = _venv(tmp_path, pythons["3.11"])
    path = _bin(tmp_path, python3_13=pythons["3.13"])
    result = choose(path, str(venv))
    assert result.returncode == 0 and result.stdout.strip() == f"{venv}/bin/python"


def test_a_venv_of_another_version_than_PYTHON_is_named(tmp_path, pythons):
    venv = _venv(tmp_path, pythons["3.11"])
    line = one_error_line(choose(_bin(tmp_path), str(venv), python=str(pythons["3.12"])))
    assert f"{venv} was built with Python 3.11 but PYTHON=" in line and "is 3.12" in line
    assert f"rm -rf {venv}" in line and "VENV=.venv-3.12" in line
    same = choose(_bin(tmp_path), str(venv), python=str(pythons["3.11"]))
    assert same.returncode == 0 and same.stdout.strip() == f"{venv}/bin/python"


def test_a_venv_of_an_unsupported_python_is_named(tmp_path, pythons):
    venv = _venv(tmp_path, pythons["3.10"])
    line = one_error_line(choose(_bin(tmp_path, python3_12=pythons["3.12"]), str(venv)))
    assert f"{venv} was built with Python 3.10" in line and f"rm -rf {venv}" in line


def test_a_venv_whose_python_is_gone_is_named(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(tmp_path / "removed" / "python3.11")
    line = one_error_line(choose(_bin(tmp_path), str(venv)))
    assert f"{venv}/bin/python does not run" in line and f"rm -rf {venv}" in line


def test_make_stops_on_the_line_before_touching_the_venv(tmp_path, pythons):
    """The Makefile's wiring: every target that uses the venv checks first; nothing is created."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make here")
    venv = tmp_path / "venv"
    result = subprocess.run(
        [make, "--no-print-directory", "install", f"VENV={venv}", f"PYTHON={pythons['3.10']}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and not venv.exists()
    ours = [line for line in result.stderr.splitlines() if not line.startswith("make")]
    assert len(ours) == 1 and "(from the command line) is Python 3.10" in ours[0]
