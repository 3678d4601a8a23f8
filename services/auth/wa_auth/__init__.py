"""Auth service (internal): the ``auth`` service (see DESIGN.md)."""
