"""Adapters that expose the bus to agent frameworks.

`relaybus.adapters.langchain` (extra `langchain`) and `relaybus.adapters.mcp` (extra
`mcp`) offer the same five agent tools, whose logic lives once in `_tools`.
"""
