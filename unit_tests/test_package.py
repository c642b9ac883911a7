"""The package as installed: one version, typing marker, license, and pre-commit running
the checks CI runs."""

from __future__ import annotations

import ast
import shlex
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

import relaybus

ROOT = Path(__file__).parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_version_is_written_once_and_the_metadata_reports_it() -> None:
    project = PYPROJECT["project"]
    assert "version" not in project
    assert "version" in project["dynamic"]
    assert PYPROJECT["tool"]["hatch"]["version"]["path"] == "src/relaybus/__init__.py"
    assert metadata.version("relaybus") == relaybus.__version__


def test_the_installed_package_is_marked_typed() -> None:
    assert (Path(relaybus.__file__).parent / "py.typed").is_file()


def test_the_license_is_mit_and_shipped() -> None:
    assert PYPROJECT["project"]["license"] == "MIT"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 the relaybus authors" in text


# -- pre-commit runs what CI runs -------------------------------------------------------


def nox_runs(session: str) -> list[list[str]]:
    """The argument lists of every `session.run(...)` in a noxfile.py session (string
    literals only; `*session.posargs` is left out)."""
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == session)
    return [
        [arg.value for arg in call.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]
        for call in ast.walk(function)
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "run"
    ]


def nox_installs(session: str) -> list[str]:
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == session)
    return [
        arg.value
        for call in ast.walk(function)
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "install"
        for arg in call.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
    ]


def pre_commit_hook(hook_id: str) -> dict[str, Any]:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = [h for repo in config["repos"] if repo["repo"] == "local" for h in repo["hooks"]]
    (hook,) = [h for h in hooks if h["id"] == hook_id]
    return hook  # type: ignore[no-any-return]


def test_pre_commit_runs_the_ruff_check_of_the_lint_session() -> None:
    hook = pre_commit_hook("ruff")
    assert shlex.split(hook["entry"]) in nox_runs("lint")
    assert hook["language"] == "system"  # the dev venv's ruff, of the series CI pins
    assert hook["pass_filenames"] is False  # the same paths as CI, not just the staged files


def test_pre_commit_runs_the_mypy_of_the_typecheck_session() -> None:
    hook = pre_commit_hook("mypy")
    assert shlex.split(hook["entry"]) in nox_runs("typecheck")  # bare `mypy`: pyproject's config
    assert hook["language"] == "system"
    assert hook["pass_filenames"] is False  # files on the command line would override `packages`


def test_the_dev_extra_pins_the_ruff_ci_installs() -> None:
    """CI's lint session installs ruff by itself; the dev venv that pre-commit uses gets
    it from the dev extra. Both must name the same series."""
    (lint_ruff,) = [r for r in nox_installs("lint") if r.startswith("ruff")]
    assert lint_ruff in PYPROJECT["project"]["optional-dependencies"]["dev"]
    assert any(r.startswith("mypy") for r in PYPROJECT["project"]["optional-dependencies"]["dev"])
