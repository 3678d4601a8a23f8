"""Webhook dispatcher (internal): the ``webhooks`` service (see DESIGN.md)."""
