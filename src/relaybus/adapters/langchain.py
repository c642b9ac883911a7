"""LangChain adapter: the bus as agent tools, and run events onto the bus.

`RelayBusToolkit(bus=..., allowed_topics=[...]).get_tools()` gives a model
`relaybus_publish`, `relaybus_request`, `relaybus_read`, `relaybus_history` and
`relaybus_stats`. With an
async `Bus` call the tools with `ainvoke`; with a `SyncBus`, `invoke` (or `ainvoke`,
which runs the call in a thread). Mistakes a model can correct (a topic outside the
allowlist, a bad name, a full queue) come back as the tool's error output — a
`ToolMessage` with `status="error"` when invoked with a tool call — and never end the
run. Needs the `langchain` extra.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import Callable
from typing import Any

from langchain_core.runnables.config import run_in_executor
from langchain_core.tools import BaseTool, BaseToolkit, ToolException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..bus import Bus
from ..sync import SyncBus
from . import _tools
from ._langchain_callbacks import RelayBusCallbackHandler, SyncRelayBusCallbackHandler, running_on
from ._tools import Allowlist

__all__ = [
    "HistoryTool",
    "PublishTool",
    "ReadTool",
    "RelayBusCallbackHandler",
    "RelayBusToolkit",
    "RequestTool",
    "StatsTool",
    "SyncRelayBusCallbackHandler",
]


class PublishArgs(BaseModel):
    topic: _tools.Topic
    payload: _tools.Payload
    priority: _tools.Priority = 0


class RequestArgs(BaseModel):
    topic: _tools.Topic
    payload: _tools.Payload
    timeout_s: _tools.TimeoutSeconds = 30


class ReadArgs(BaseModel):
    topic: _tools.Topic
    group: _tools.Group
    count: _tools.Count = 10
    wait_seconds: _tools.WaitSeconds = 0


class HistoryArgs(BaseModel):
    topic: _tools.Topic
    limit: _tools.Limit = 20


class StatsArgs(BaseModel):
    pass


def _explain_invalid_args(error: Any) -> str:
    """Which argument was wrong and why, so the model can retry with a fixed call."""
    if isinstance(error, ValidationError):
        return _tools.explain_invalid(error)
    return f"invalid arguments: {error}"


class RelayBusTool(BaseTool):
    """A tool over a Bus (async: `ainvoke`) or a SyncBus (`invoke` and `ainvoke`)."""

    bus: Bus | SyncBus = Field(exclude=True)
    allowed_topics: list[str] | None = None
    """Glob patterns of the topics this tool may touch; None: every topic."""
    new_groups: list[str] | None = None
    """Glob patterns of the consumer groups a read may create; None: it reads existing ones only."""
    # On by default: refusals and bad arguments are tool output the model can act on.
    handle_tool_error: bool | str | Callable[[ToolException], Any] | None = True
    handle_validation_error: bool | str | Callable[[Any], str] | None = _explain_invalid_args

    @model_validator(mode="after")
    def _describe_allowlist(self) -> RelayBusTool:
        self.description = self._allowlist().tool_description(self.name)
        return self

    def _allowlist(self) -> Allowlist:
        return Allowlist(self.allowed_topics, self.new_groups)

    @abstractmethod
    async def _execute(self, bus: Bus, allow: Allowlist, args: dict[str, Any]) -> BaseModel | dict[str, Any]:
        """The tool's work on an async Bus; `args` are already validated by `args_schema`."""

    async def _answer(self, bus: Bus, args: dict[str, Any]) -> str:
        try:
            result = await self._execute(bus, self._allowlist(), args)
        except _tools.AGENT_ERRORS as exc:
            raise ToolException(f"{self.name} failed: {exc}") from exc
        if isinstance(result, BaseModel):
            return result.model_dump_json(exclude_defaults=True)
        return _tools.compact_json(result)

    def _run(self, **args: Any) -> str:
        if not isinstance(self.bus, SyncBus):
            raise RuntimeError(
                f"{self.name} holds an async Bus: call it with ainvoke, or build the toolkit with a SyncBus"
            )
        bus = self.bus.bus  # the SyncBus's Bus, on its loop: the tool's work runs there
        loop = bus.loop
        if loop is None or not loop.is_running():
            raise ToolException(f"{self.name} failed: the bus is not connected (use 'with bus:')")
        if running_on(loop):
            raise RuntimeError(f"{self.name}: a SyncBus tool cannot be invoked from the bus's own loop")
        return asyncio.run_coroutine_threadsafe(self._answer(bus, args), loop).result()

    async def _arun(self, **args: Any) -> str:
        if isinstance(self.bus, SyncBus):
            result: str = await run_in_executor(None, self._run, **args)
            return result
        return await self._answer(self.bus, args)


class PublishTool(RelayBusTool):
    name: str = "relaybus_publish"
    description: str = _tools.DESCRIPTIONS["relaybus_publish"]
    args_schema: type[BaseModel] = PublishArgs

    async def _execute(self, bus: Bus, allow: Allowlist, args: dict[str, Any]) -> BaseModel:
        a = PublishArgs.model_validate(args)
        return await _tools.publish(bus, allow, a.topic, a.payload, a.priority)


class RequestTool(RelayBusTool):
    name: str = "relaybus_request"
    description: str = _tools.DESCRIPTIONS["relaybus_request"]
    args_schema: type[BaseModel] = RequestArgs

    async def _execute(self, bus: Bus, allow: Allowlist, args: dict[str, Any]) -> BaseModel:
        a = RequestArgs.model_validate(args)
        return await _tools.request(bus, allow, a.topic, a.payload, a.timeout_s)


class ReadTool(RelayBusTool):
    name: str = "relaybus_read"
    description: str = _tools.DESCRIPTIONS["relaybus_read"]
    args_schema: type[BaseModel] = ReadArgs

    async def _execute(self, bus: Bus, allow: Allowlist, args: dict[str, Any]) -> BaseModel:
        a = ReadArgs.model_validate(args)
        return await _tools.read(bus, allow, a.topic, a.group, a.count, a.wait_seconds)


class HistoryTool(RelayBusTool):
    name: str = "relaybus_history"
    description: str = _tools.DESCRIPTIONS["relaybus_history"]
    args_schema: type[BaseModel] = HistoryArgs

    async def _execute(self, bus: Bus, allow: Allowlist, args: dict[str, Any]) -> BaseModel:
        a = HistoryArgs.model_validate(args)
        return await _tools.history(bus, allow, a.topic, a.limit)


class StatsTool(RelayBusTool):
    name: str = "relaybus_stats"
    description: str = _tools.DESCRIPTIONS["relaybus_stats"]
    args_schema: type[BaseModel] = StatsArgs

    async def _execute(self, bus: Bus, allow: Allowlist, args: dict[str, Any]) -> dict[str, Any]:
        return await _tools.stats(bus, allow)


class RelayBusToolkit(BaseToolkit):
    """The five relaybus tools over one bus, limited to `allowed_topics` (glob patterns);
    `relaybus_read` reads existing groups, and makes only those `new_groups` names."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    bus: Bus | SyncBus
    allowed_topics: list[str] | None = None
    new_groups: list[str] | None = None

    @field_validator("allowed_topics")
    @classmethod
    def _valid_patterns(cls, patterns: list[str] | None) -> list[str] | None:
        Allowlist(patterns)  # a bad pattern fails here, not on the model's first call
        return patterns

    @field_validator("new_groups")
    @classmethod
    def _valid_groups(cls, patterns: list[str] | None) -> list[str] | None:
        Allowlist(None, patterns)
        return patterns

    def get_tools(self) -> list[BaseTool]:
        return [
            tool(bus=self.bus, allowed_topics=self.allowed_topics, new_groups=self.new_groups)
            for tool in (PublishTool, RequestTool, ReadTool, HistoryTool, StatsTool)
        ]
