"""The package as installed: one version, typing marker, license, and pre-commit running
the checks CI runs."""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
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


def nox_groups(session: str) -> list[str]:
    """The dependency groups a noxfile.py session installs (its `_groups(...)` calls)."""
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == session)
    return [
        arg.value
        for call in ast.walk(function)
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "_groups"
        for arg in call.args
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
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


def test_pre_commit_runs_the_format_check_of_the_lint_session() -> None:
    hook = pre_commit_hook("ruff-format")
    assert shlex.split(hook["entry"]) in nox_runs("lint")  # `ruff format --check`, CI's paths
    assert hook["language"] == "system"
    assert hook["pass_filenames"] is False


def test_pre_commit_runs_the_mypy_of_the_typecheck_session() -> None:
    hook = pre_commit_hook("mypy")
    assert shlex.split(hook["entry"]) in nox_runs("typecheck")  # bare `mypy`: pyproject's config
    assert hook["language"] == "system"
    assert hook["pass_filenames"] is False  # files on the command line would override `packages`


def test_the_dev_group_has_the_tools_ci_installs() -> None:
    """The dev venv that pre-commit uses gets ruff and mypy from the dev dependency group,
    which includes the groups the lint and typecheck sessions install: the same series."""
    groups = PYPROJECT["dependency-groups"]
    assert {"include-group": "lint"} in groups["dev"] and {"include-group": "typecheck"} in groups["dev"]
    assert [r for r in groups["lint"] if r.startswith("ruff")] == ["ruff>=0.17,<0.18"]
    assert any(r.startswith("mypy") for r in groups["typecheck"])
    assert "lint" in nox_groups("lint") and "typecheck" in nox_groups("typecheck")


def test_tools_are_not_an_extra_of_the_package() -> None:
    """Users never get the test tools with relaybus: they live in dependency groups."""
    assert "dev" not in PYPROJECT["project"]["optional-dependencies"]


# -- what installing relaybus costs others --------------------------------------------


def test_the_pytest_plugin_imports_neither_the_bus_nor_redis() -> None:
    """pytest loads relaybus.testing in every project that installs relaybus (pytest11):
    loading it must not import the bus, pydantic-settings or redis-py."""
    heavy = ["relaybus.bus", "redis", "pydantic_settings", "pydantic"]
    code = f"import sys, relaybus.testing\nprint([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_public_name_is_importable_from_the_package() -> None:
    """The facade is lazy (PEP 562); each name in __all__ still resolves, to the real object."""
    from relaybus.bus import Bus

    assert relaybus.Bus is Bus
    assert sorted(relaybus.__all__) == sorted(relaybus._PUBLIC)
    for name in relaybus.__all__:
        assert getattr(relaybus, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'Bsu'"):
        relaybus.Bsu  # noqa: B018


def test_python_dash_m_relaybus_is_the_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "relaybus", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"relaybus {relaybus.__version__}"


def test_the_version_is_the_newest_release_in_the_changelog() -> None:
    """A release is `__version__` with its own dated section under `[Unreleased]`."""
    changelog = (ROOT / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", changelog, re.MULTILINE)
    assert changelog.index("## [Unreleased]") < changelog.index(f"## [{relaybus.__version__}]")
    assert releases[0] == relaybus.__version__
