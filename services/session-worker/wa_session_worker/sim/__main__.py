"""``python -m wa_session_worker.sim ...``: drive the simulated WhatsApp network."""

import sys

from wa_session_worker.sim.cli import main

sys.exit(main())
