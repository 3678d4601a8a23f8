"""Prometheus metrics of the WhatsApp engines (bounded labels only: never an instance id or JID)."""

from __future__ import annotations

from prometheus_client import Counter

ENGINE_ERRORS = Counter(
    "wa_engine_errors_total",
    "Engine operations that failed, by engine (simulator, neonize) and operation "
    "(start, send_text, send_media, contacts, check_number, pair_phone, logout, handler, ...).",
    ["engine", "operation"],
)
SIM_DOUBLE_CONNECTIONS = Counter(
    "wa_sim_double_connections_total",
    "Double connections detected by this process's simulator: a live session of an account was "
    "replaced by a second live session of the same account elsewhere on the network.",
)
SIM_EXTERNAL_MESSAGES = Counter(
    "wa_sim_external_messages_total",
    "Messages the simulator delivered to simulated external contacts (no live session holds them).",
)
