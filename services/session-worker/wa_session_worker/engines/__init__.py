"""WhatsApp engines: the ``Engine`` interface and its implementations (simulator, neonize)."""
