"""The simulator's command line: ``python -m wa_session_worker.sim`` (see :mod:`.cli`)."""
