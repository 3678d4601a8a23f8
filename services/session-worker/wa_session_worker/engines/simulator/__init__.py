"""The simulator engine (``WA_ENGINE=simulator``): a simulated WhatsApp network over ``wa.sim``."""

from wa_session_worker.engines.simulator.engine import SimTimings, SimulatorEngine

__all__ = ["SimTimings", "SimulatorEngine"]
