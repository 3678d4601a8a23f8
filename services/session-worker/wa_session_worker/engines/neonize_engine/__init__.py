"""The neonize engine (``WA_ENGINE=neonize``): real WhatsApp via neonize/whatsmeow."""

from wa_session_worker.engines.neonize_engine.engine import NeonizeEngine

__all__ = ["NeonizeEngine"]
