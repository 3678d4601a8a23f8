"""The simulator engine (``WA_ENGINE=simulator``): a simulated WhatsApp network over ``wa.sim``."""

from wa_session_worker.engines.simulator.engine import SimulatorEngine
from wa_session_worker.engines.simulator.session import SimTimings

__all__ = ["SimTimings", "SimulatorEngine"]
