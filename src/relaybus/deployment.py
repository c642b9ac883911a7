"""Which kind of Redis a URL names: one server, a Cluster (seed nodes) or a Sentinel-watched
master (sentinels and a service name). redis-py's own URL parser knows only the first."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

Kind = Literal["standalone", "cluster", "sentinel"]
SCHEMES: dict[str, tuple[Kind, bool]] = {  # scheme -> (kind, tls)
    "redis": ("standalone", False),
    "rediss": ("standalone", True),
    "unix": ("standalone", False),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
}
DIGITS = re.compile(r"[0-9]+")  # not str.isdigit(): that takes "²" too


@dataclass(frozen=True, slots=True)
class Deployment:
    kind: Kind
    tls: bool
    nodes: tuple[tuple[str, int], ...] = ()  # cluster seed nodes, or the sentinels
    service: str = ""  # sentinel: the monitored master's name
    db: int = 0
    username: str | None = None
    password: str | None = None


def parse(url: str) -> Deployment:
    """The deployment a URL names; ValueError saying what is wrong with it."""
    try:
        parts = urlsplit(url)
    except ValueError:  # urlsplit's message quotes the netloc, password included
        raise ValueError("the URL does not parse (not shown: it may hold a password)") from None
    if "@" in url.partition("://")[2][len(parts.netloc) :]:  # the userinfo ended early
        raise ValueError(
            "the URL has an '@' after its host: a user name or password holding / ? # "
            "or @ must percent-encode it (%2F %3F %23 %40) (not shown: it may hold a "
            "password)"
        )
    if parts.scheme not in SCHEMES:
        raise ValueError(
            f"the URL must start with one of {', '.join(s + '://' for s in SCHEMES)} "
            f"(its scheme is {parts.scheme!r})"
        )
    kind, tls = SCHEMES[parts.scheme]
    options = parse_qs(parts.query, keep_blank_values=True)
    # redis-py would act on any ?option - ?password= past the plain-TCP check,
    # ?ssl_cert_reqs=none turning verification off: only the database is taken.
    refused = sorted(set(options) - ({"db"} if kind == "standalone" else set()))
    if refused or parts.fragment:
        raise ValueError(
            f"the URL's ?options {refused or ['#' + parts.fragment]} are not taken: "
            "set them as config fields (only ?db= on redis://, rediss://, unix://)"
        )
    netloc = parts.netloc.rsplit("@", 1)[-1]  # what follows the credentials: safe to show
    if kind == "standalone":
        return Deployment(kind, tls, db=_standalone_db(parts.scheme, netloc, parts.path, options))
    nodes = tuple(_node(n, parts.scheme) for n in netloc.split(",")) if netloc else ()
    if not nodes:
        raise ValueError(f"{parts.scheme}:// needs at least one host:port")
    path = [p for p in parts.path.split("/") if p]
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if kind == "cluster":
        if path not in ([], ["0"]):
            raise ValueError("a Redis Cluster has database 0 only: the URL takes no other /db")
        return Deployment(kind, tls, nodes, username=user, password=password)
    if not path or len(path) > 2:
        raise ValueError(
            f"{parts.scheme}:// needs the master's service name: "
            f"{parts.scheme}://host:port[,host:port]/service_name[/db]"
        )
    db = _db(path[1], f"/{path[0]}/{path[1]}") if len(path) == 2 else 0
    return Deployment(kind, tls, nodes, path[0], db, user, password)


def _standalone_db(scheme: str, netloc: str, path: str, options: dict[str, list[str]]) -> int:
    """The database a redis://, rediss:// or unix:// URL names, after checking its port:
    redis-py would take a junk port only when connecting, and a junk /db as database 0."""
    port = netloc.rpartition("]")[2].partition(":")[2]  # after an IPv6 literal's "]"
    if scheme != "unix" and port and not (DIGITS.fullmatch(port) and 0 < int(port) < 65536):
        raise ValueError(f"the URL's port {port!r} (in {netloc!r}) is not a number from 1 to 65535")
    no_path = scheme == "unix" or path in ("", "/")  # a unix:// URL's path is its socket
    if "db" in options:
        if len(options["db"]) > 1 or not no_path:
            raise ValueError("the URL gives its database twice (as ?db= and /db, or ?db= twice)")
        return _db(options["db"][0], f"?db={options['db'][0]}")
    if no_path:
        return 0
    return _db(path[1:], path)


def _db(text: str, part: str) -> int:
    if not DIGITS.fullmatch(text):
        raise ValueError(f"the URL's database {part!r} is not a number")
    return int(text)


def _node(text: str, scheme: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not DIGITS.fullmatch(port) or not 0 < int(port) < 65536:
        raise ValueError(
            f"{scheme}:// lists nodes as host:port, comma-separated, each port 1-65535 (got {text!r})"
        )
    return host.strip("[]"), int(port)
