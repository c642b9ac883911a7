"""The exceptions relaybus raises; every one is a RelayBusError."""


class RelayBusError(Exception):
    """Base class of every error relaybus raises on purpose."""


class ConfigError(RelayBusError, ValueError):
    """The configuration is invalid or unsafe; raised before any connection is made."""


class BusUnavailableError(RelayBusError):
    """Redis could not be reached within the configured timeout."""


class OutboxFullError(RelayBusError):
    """The local outbox holds `outbox_max_entries` messages or `outbox_max_bytes` bytes."""


class ReplicationError(RelayBusError):
    """A publish was written on the master, but fewer than `min_replicas_acked` replicas
    confirmed it within `replica_ack_timeout_ms`: a failover now may lose it."""


class QueueFullError(RelayBusError):
    """The topic holds `max_queue_size` unconsumed messages and overflow is `reject`."""


class TopicClosedError(RelayBusError):
    """A publish to a topic `close_topic` closed: nothing of it was appended."""


class RequestTimeoutError(RelayBusError, TimeoutError):
    """`request` got no reply within its timeout."""


class RequestFailedError(RelayBusError):
    """`request`'s responder failed for good (dead-lettered, retries used up, or dropped).

    Raised at once instead of a timeout; the keywords are kept as attributes.

    Args:
        message: The error's text.
        error_type: The responder's error type name.
        error: The responder's error message (bounded).
        outcome: `"dead_lettered"` or `"dropped"`.
        reason: Why, as the failure policy said.
    """

    def __init__(
        self, message: str, *, error_type: str = "", error: str = "", outcome: str = "", reason: str = ""
    ) -> None:  # defaults: an unpickled copy keeps its message
        super().__init__(message)
        self.error_type = error_type
        self.error = error
        self.outcome = outcome
        self.reason = reason


class RedisFullError(RelayBusError):
    """Redis refused a write because its memory is full (`maxmemory` reached with
    `noeviction`): nothing of that publish (or dead-lettering, replay, ...) was written.
    Consumers can still drain: reads and acks free memory."""


class MessageTooLargeError(RelayBusError, ValueError):
    """The encoded message is larger than `max_message_bytes`."""


class FilterError(RelayBusError, ValueError):
    """A subscription's filter spec is malformed; raised by `subscribe`, naming the problem."""


class DecodeError(RelayBusError):
    """A stream entry is not a relaybus envelope (written by a foreign client, or corrupt)."""


class PluginError(RelayBusError):
    """A plugin raised inside a hook; the message names the plugin."""


class Reject(Exception):
    """Raised by a handler: this message can never succeed, dead-letter it without retries."""
