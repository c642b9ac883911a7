"""relaybus: a message bus for AI agents on Redis Streams, built as a pluggy plugin host.

Everything importable from here is the public API (docs/architecture.md, "Public
facade"); the modules behind it are private.
"""

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
    RequestTimeoutError,
    TopicClosedError,
)
from .hookspecs import hookimpl
from .message import Message
from .sync import SyncBus

__version__ = "0.1.0"

__all__ = [
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
    "RequestTimeoutError",
    "Subscription",
    "SyncBus",
    "TopicClosedError",
    "hookimpl",
]
