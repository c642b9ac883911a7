"""What the README shows is what runs and what is installable: its program is the tested
file byte for byte, and every extra in pyproject.toml is on the install page."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
INSTALL = (ROOT / "docs" / "install.md").read_text()
OPTIONAL = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
EXTRAS = sorted(OPTIONAL)


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def test_the_readme_program_is_the_tested_file_verbatim() -> None:
    """integration_tests/test_quickstart.py runs docs/examples/quickstart.py."""
    [program] = blocks(README, "python")
    assert program == (ROOT / "docs" / "examples" / "quickstart.py").read_text()
    assert "docs/examples/quickstart.py" in README


def test_the_readme_program_is_a_whole_program() -> None:
    [program] = blocks(README, "python")
    compile(program, "README.md", "exec")  # `async with` at top level would not compile
    assert "asyncio.run(main())" in program and "await bus.stop()" in program


def test_the_readme_keeps_its_two_commands() -> None:
    commands = blocks(README, "bash")
    assert len(commands) == 2
    assert "relaybus demo" in commands[0] and "nox" in commands[1]


def test_the_readme_links_work_on_the_package_index() -> None:
    """PyPI shows README.md without the repository around it: every link is absolute,
    and under the Source URL pyproject.toml gives."""
    source = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Source"]
    links = re.findall(r"\]\(([^)]+)\)", README)
    assert links
    for link in links:
        assert link.startswith(f"{source}/blob/main/"), link
        assert (ROOT / link.removeprefix(f"{source}/blob/main/")).is_file(), link


def test_ci_runs_the_readme_test_command_exactly() -> None:
    """.ci/run must not pass by a command the README does not give."""
    [command] = blocks(README, "bash")[1].strip().splitlines()
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_there_are_extras_to_check() -> None:
    assert {"embedded", "langchain", "mcp", "metrics", "uvloop", "all"} <= set(EXTRAS)


@pytest.mark.parametrize("extra", EXTRAS)
def test_every_extra_has_a_row_on_the_install_page(extra: str) -> None:
    [row] = [line for line in INSTALL.splitlines() if line.startswith(f"| `{extra}` |")]
    assert len(row.split(" | ")) == 3 and all(cell.strip(" |") for cell in row.split(" | "))


def test_the_install_page_says_what_all_installs() -> None:
    [spec] = OPTIONAL["all"]
    match = re.fullmatch(r"relaybus\[(.*)\]", spec)
    assert match is not None, spec
    members = set(match[1].split(","))
    [row] = [line for line in INSTALL.splitlines() if line.startswith("| `all` |")]
    installs = row.split(" | ")[1]
    assert set(re.findall(r"`(\w+)`", installs)) == members


@pytest.mark.parametrize("extra", [e for e in EXTRAS if e != "dev"])
def test_every_user_extra_is_named_in_the_readme(extra: str) -> None:
    install = README.split("## Install", 1)[1].split("\n## ", 1)[0]
    assert f"`{extra}`" in install and "docs/install.md" in install


def test_the_install_page_is_in_the_nav() -> None:
    assert "  - Install: install.md\n" in (ROOT / "mkdocs.yml").read_text()
