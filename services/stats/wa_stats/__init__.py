"""Stats service (internal): the ``stats`` service (see DESIGN.md)."""
