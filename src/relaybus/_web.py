"""What the HTTP servers (`relaybus dashboard`, `relaybus mcp --transport http`) share at
their boundary: which Host names they answer, the bearer-token check, a bound socket, and
uvicorn without its own signal handlers. Needs Starlette and uvicorn (both extras have them).
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import socket
from collections.abc import Iterable, Iterator

import uvicorn

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address in its usual spelling (`127.0.0.0/8`, `::1`)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _as_host(name: str) -> str:
    """A name as a Host header carries it: an IPv6 address in brackets, lower case."""
    name = name.strip().lower()
    return f"[{name}]" if ":" in name and not name.startswith("[") else name


def host_names(bound: str, extra: Iterable[str] = ()) -> list[str]:
    """The exact Host names a server bound to `bound` answers (an allow-list: any other
    spelling, `127.1` or `0x7f000001` among them, is refused): the bound host itself
    (not 0.0.0.0 or ::, which no client should name), the loopback names, and `extra`."""
    names = [*LOOPBACK_NAMES]
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(bound.strip("[]")).is_unspecified:
            bound = ""
    for name in (bound, *extra):
        if name.strip() and _as_host(name) not in names:
            names.append(_as_host(name))
    return names


def bearer_ok(authorization: str | None, token: str) -> bool:
    """`Authorization: Bearer <token>` with exactly `token`, compared in constant time."""
    scheme, _, given = (authorization or "").partition(" ")
    if not token or scheme.lower() != "bearer":
        return False
    return secrets.compare_digest(given.strip().encode(), token.encode())


def listen(host: str, port: int) -> socket.socket:
    """A bound listening socket, so a port in use is one clear error before anything starts."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: whoever runs it stops it with an event."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
