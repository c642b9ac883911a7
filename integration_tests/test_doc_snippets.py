"""Every ```python block in docs/ runs against a real Redis, or says why it cannot.

A block is one of (CONTRIBUTING.md, "Docs"):
- an include (`--8<-- "docs/examples/x.py"`): the file is run by an integration test that
  names it;
- a fragment, marked by `<!-- fragment: why -->` on the line before the fence (a signature,
  a loop that never ends, a port bound for good): it must compile, and is not run;
- a pytest module (it defines `test_...` functions): run by a child pytest with the testing
  kit's fixtures on this suite's Redis, every test passing;
- anything else: run, in page order, with `bus` (a connected Bus) and `url` (the Redis URL)
  under the test's prefix, plus the few names the pages leave to the reader (GIVEN).
  `redis://localhost:6379/0` in a block means the test's server, and RELAYBUS_URL and
  RELAYBUS_PREFIX are the test's, so a block's own `Bus()` lands under the prefix too.
  A line `expression  # literal` states a result: it is asserted.
So a new block that is neither marked nor runnable fails here.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import io
import os
import re
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import pytest
from langchain.agents import create_agent
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from relaybus import Bus, Message, SyncBus

from .helpers import BINARIES  # noqa: F401  # on the newest Redis line only (conftest.py): the docs are not about versions

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLE_PLUGIN = DOCS / "examples" / "relaybus-example-plugin"
FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
FRAGMENT = re.compile(r"<!-- fragment: (.*?) -->")
INCLUDE = re.compile(r'--8<-- "([^"]+)"\n')
LOCAL = "redis://localhost:6379/0"


@dataclass(frozen=True)
class Block:
    page: str  # relative to docs/
    line: int  # of the opening fence
    source: str
    fragment: str | None  # the reason given, when marked

    @property
    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"

    @property
    def include(self) -> str | None:
        match = INCLUDE.fullmatch(self.source)
        return match[1] if match else None

    @property
    def is_pytest_module(self) -> bool:
        return bool(re.search(r"^(async )?def test_", self.source, re.MULTILINE))


def blocks(page: Path, root: Path = DOCS) -> Iterator[Block]:
    text = page.read_text()
    for match in FENCE.finditer(text):
        before = text[: max(match.start() - 1, 0)].rsplit("\n", 1)[-1]  # the line before the fence
        marker = FRAGMENT.fullmatch(before.strip())
        yield Block(
            page.relative_to(root).as_posix(),
            text.count("\n", 0, match.start()) + 1,
            match[1],
            marker[1] if marker else None,
        )


ALL = [b for page in sorted(DOCS.rglob("*.md")) for b in blocks(page)]
FRAGMENTS = [b for b in ALL if b.fragment is not None]
INCLUDES = [b for b in ALL if b.fragment is None and b.include]
MODULES = [b for b in ALL if b.fragment is None and not b.include and b.is_pytest_module]
RUN = [b for b in ALL if b not in FRAGMENTS + INCLUDES + MODULES]
PAGES = sorted({b.page for b in RUN})


def test_every_block_is_found_and_most_run() -> None:
    assert len(ALL) >= 39 and len(FRAGMENTS) < len(RUN)
    assert {b.page for b in FRAGMENTS} <= {b.page for b in ALL}


@pytest.mark.parametrize("block", FRAGMENTS, ids=lambda b: b.where)
def test_a_fragment_says_why_and_compiles(block: Block) -> None:
    assert block.fragment and block.fragment.strip() == block.fragment, f"{block.where}: say why"
    compile(block.source, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


@pytest.mark.parametrize("block", INCLUDES, ids=lambda b: b.where)
def test_an_included_file_is_run_by_a_test(block: Block) -> None:
    assert block.include is not None
    path = ROOT / block.include
    assert path.is_file(), f"{block.where}: no {block.include}"
    names = {path.name, path.parent.name} if path.parent != DOCS / "examples" else {path.name}
    tests = [t for t in (ROOT / "integration_tests").glob("test_*.py") if t.name != Path(__file__).name]
    assert any(name in t.read_text() for t in tests for name in names), f"no test runs {block.include}"


# -- running them ------------------------------------------------------------------------


class ChatModel(GenericFakeChatModel):
    """The reader's chat model: offline, answering "done"; tools are accepted and ignored."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> ChatModel:
        return self


class Order(pydantic.BaseModel):
    amount: float


class Gateway:
    async def charge(self, order: Order) -> None:
        pass


async def look_at(pr: int) -> str:
    return "approve"


def given(redis_url: str, sync_bus: SyncBus) -> dict[str, Any]:
    """What the pages take as the reader's: the usual imports, and their own objects."""
    return {
        "asyncio": asyncio,
        "Bus": Bus,
        "Message": Message,
        "SyncBus": SyncBus,
        "url": redis_url,
        "sync_bus": sync_bus,
        "look_at": look_at,
        "Order": Order,
        "gateway": Gateway(),
        "secret": "s3cret",
        "chat_model": ChatModel(messages=iter([])),
        "agent": create_agent(ChatModel(messages=iter([AIMessage(content="done")])), tools=[]),
        "inputs": {"messages": [("user", "review PR 42")]},
    }


def stated_results(source: str) -> str:
    """`expression  # literal` on a line of its own becomes `assert expression == literal`."""
    lines = source.splitlines()
    comments = {
        t.start[0]: t.string
        for t in tokenize.generate_tokens(io.StringIO(source).readline)
        if t.type == tokenize.COMMENT
    }
    for node in ast.parse(source).body:
        comment = comments.get(node.lineno)
        if not isinstance(node, ast.Expr) or node.end_lineno != node.lineno or comment is None:
            continue
        try:
            ast.literal_eval(stated := comment[1:].strip())
        except (ValueError, SyntaxError):
            continue
        expression = ast.get_source_segment(source, node)
        lines[node.lineno - 1] = f"assert ({expression}) == ({stated}), {expression!r}"
    return "\n".join(lines) + "\n"


def test_a_stated_result_is_asserted() -> None:
    source = 'msg.status   # "error"\nmsg.content  # "a comment, not a literal\nprint(1)  # 1\n'
    assert stated_results(source).splitlines() == [
        "assert (msg.status) == (\"error\"), 'msg.status'",
        'msg.content  # "a comment, not a literal',
        "assert (print(1)) == (1), 'print(1)'",
    ]


def test_a_marker_counts_only_on_the_line_before_the_fence(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- fragment: why -->\n```python\na\n```\n<!-- fragment: far -->\n\n```python\nb\n```\n"
    )
    assert [(b.source, b.fragment, b.line) for b in blocks(page, tmp_path)] == [
        ("a\n", "why", 2),
        ("b\n", None, 7),
    ]


def run(block: Block, namespace: dict[str, Any], runner: asyncio.Runner) -> None:
    source = stated_results(block.source).replace(LOCAL, namespace["url"])
    code = compile(
        "\n" * block.line + source, f"docs/{block.page}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    )
    result = eval(code, namespace)  # the project's own docs
    if inspect.iscoroutine(result):
        runner.run(result)


@pytest.mark.parametrize("page", PAGES)
def test_the_page_runs(page: str, redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAYBUS_URL", redis_url)
    monkeypatch.setenv("RELAYBUS_PREFIX", prefix)
    with asyncio.Runner() as runner, SyncBus.from_url(redis_url, prefix=prefix) as sync_bus:
        bus = Bus.from_url(redis_url, prefix=prefix)
        runner.run(bus.connect())
        namespace = given(redis_url, sync_bus)
        try:
            for block in (b for b in RUN if b.page == page):
                namespace["bus"] = bus  # the page's bus, whatever a block before named so
                run(block, namespace, runner)
        finally:
            runner.run(bus.stop())
            runner.run(bus.close())


@pytest.mark.parametrize("block", MODULES, ids=lambda b: b.where)
def test_the_pytest_module_passes(
    block: Block, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    """As a reader runs it: a file of its own, pytest's defaults (pytest-asyncio strict),
    the testing kit's fixtures, and the docs' example plugin importable."""
    monkeypatch.setenv("RELAYBUS_TEST_URL", redis_url)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(EXAMPLE_PLUGIN), *filter(None, [os.environ.get("PYTHONPATH")])])
    )
    pytester.makepyfile(test_from_the_docs=block.source)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(passed=len(re.findall(r"^(?:async )?def test_", block.source, re.MULTILINE)))
