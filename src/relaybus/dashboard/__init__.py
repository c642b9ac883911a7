"""`relaybus dashboard`: a small web UI over one Bus (the 'dashboard' extra).

See docs/dashboard.md. `create_app` builds the Starlette app, `listen` binds its socket,
`serve` runs it under uvicorn until an event is set.
"""

from __future__ import annotations

from .._web import listen
from .app import create_app, serve

__all__ = ["create_app", "listen", "serve"]
