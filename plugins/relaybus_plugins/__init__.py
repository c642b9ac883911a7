"""relaybus's built-in plugins. Each module is registered through the `relaybus`
entry-point group and imports only relaybus's public API, like a third-party plugin."""
