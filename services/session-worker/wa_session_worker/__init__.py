"""Session worker (internal): the ``session-worker`` service (see DESIGN.md)."""
