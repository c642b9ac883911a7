"""`python -m relaybus`: the `relaybus` command."""

from .cli import app

app(prog_name="relaybus")
