"""Choose and build the WhatsApp engine named by ``WA_ENGINE``."""

from __future__ import annotations

from wa_common.bus import Bus
from wa_session_worker.engines.base import Engine, EventCallback
from wa_session_worker.engines.settings import EngineSettings


def build_engine(
    settings: EngineSettings,
    on_event: EventCallback,
    *,
    bus: Bus | None = None,
    node: str | None = None,
) -> Engine:
    """The engine for ``settings.engine``; call ``await engine.start()`` before using it and
    ``await engine.close()`` at shutdown.

    - ``simulator``: joins the simulated network on ``wa.sim``. It opens its own connection to
      ``settings.amqp_url`` unless ``bus`` (a connected :class:`Bus`) is given; ``node`` names this
      worker on the network (default ``host:pid``).
    - ``neonize``: real WhatsApp; ``bus`` and ``node`` are ignored (the simulated network is
      never touched). neonize is imported only here, so the simulator never loads it.
    """
    if settings.engine == "simulator":
        from wa_session_worker.engines.simulator import SimTimings, SimulatorEngine

        return SimulatorEngine(
            on_event,
            amqp_url=settings.amqp_url,
            bus=bus,
            timings=SimTimings.from_settings(settings),
            node=node,
        )
    if settings.engine == "neonize":
        from wa_session_worker.engines.neonize_engine import NeonizeEngine

        return NeonizeEngine(settings, on_event)
    raise ValueError(f"unknown engine {settings.engine!r}")
