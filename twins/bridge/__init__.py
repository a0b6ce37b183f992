"""OPC-UA bridge: mapping file, subscriptions, reconnect with backoff, history replay (``python -m twins.bridge``)."""
