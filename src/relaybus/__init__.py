"""relaybus: a message bus for AI agents on Redis Streams, built as a pluggy plugin host.

Everything importable from here is the public API (docs/architecture.md, "Public
facade"); the modules behind it are private.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

# name -> the private module it lives in. Imported on first use (PEP 562), so `import
# relaybus` - and pytest loading the testing kit in every project that installs relaybus -
# costs nothing until the bus itself is used.
_PUBLIC = {
    "Bus": "bus",
    "BusConfig": "config",
    "BusUnavailableError": "errors",
    "ConfigError": "errors",
    "DecodeError": "errors",
    "FailureDecision": "delivery",
    "FilterError": "errors",
    "Message": "message",
    "MessageTooLargeError": "errors",
    "OutboxFullError": "errors",
    "PluginError": "errors",
    "QueueFullError": "errors",
    "RedisFullError": "errors",
    "Reject": "errors",
    "RelayBusError": "errors",
    "ReplicationError": "errors",
    "RequestFailedError": "errors",
    "RequestTimeoutError": "errors",
    "TopicClosedError": "errors",
    "Subscription": "delivery",
    "SyncBus": "sync",
    "hookimpl": "hookspecs",
}
__all__ = [  # the same names as _PUBLIC (unit_tests/test_package.py holds them equal)
    "Bus",
    "BusConfig",
    "BusUnavailableError",
    "ConfigError",
    "DecodeError",
    "FailureDecision",
    "FilterError",
    "Message",
    "MessageTooLargeError",
    "OutboxFullError",
    "PluginError",
    "QueueFullError",
    "RedisFullError",
    "Reject",
    "RelayBusError",
    "ReplicationError",
    "RequestFailedError",
    "RequestTimeoutError",
    "Subscription",
    "SyncBus",
    "TopicClosedError",
    "hookimpl",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'relaybus' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


if TYPE_CHECKING:  # what the names above are, for type checkers and editors
    from .bus import Bus
    from .config import BusConfig
    from .delivery import FailureDecision, Subscription
    from .errors import (
        BusUnavailableError,
        ConfigError,
        DecodeError,
        FilterError,
        MessageTooLargeError,
        OutboxFullError,
        PluginError,
        QueueFullError,
        RedisFullError,
        Reject,
        RelayBusError,
        ReplicationError,
        RequestFailedError,
        RequestTimeoutError,
        TopicClosedError,
    )
    from .hookspecs import hookimpl
    from .message import Message
    from .sync import SyncBus
