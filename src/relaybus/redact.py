"""Keeping secrets out of logs, reprs and errors."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***; a URL that does not even parse is not
    shown at all (its text may hold a password)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<a URL that does not parse>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def redact_text(text: str) -> str:
    """Every URL inside `text` (an error message, say) with its password replaced by ***."""
    return _URL.sub(lambda m: redact_url(m.group(0)), text)
