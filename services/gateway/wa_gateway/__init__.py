"""WhatsApp Multi-Instance API: the ``gateway`` service (see DESIGN.md)."""
