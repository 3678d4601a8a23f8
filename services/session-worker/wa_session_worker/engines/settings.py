"""Engine settings, mixed into ``WorkerSettings`` (owned by the engines' code).

Fields without an alias are read with the worker's prefix (``WORKER_SIM_QR_FIRST_S``...).
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field

from wa_common.settings import StoreSettings


class EngineSettings(StoreSettings):
    engine: Literal["simulator", "neonize"] = Field(
        "simulator", validation_alias=AliasChoices("WA_ENGINE"), description="WhatsApp engine"
    )

    # --- simulator -------------------------------------------------------------------------
    sim_qr_first_s: float = Field(60.0, gt=0, description="validity of the first QR code (seconds)")
    sim_qr_next_s: float = Field(20.0, gt=0, description="validity of each following QR code (seconds)")
    sim_qr_codes: int = Field(6, ge=1, le=100, description="QR codes per linking attempt before timeout")
    sim_delivered_ms: int = Field(300, ge=0, description="delay before a delivered receipt (ms)")
    sim_read_ms: int = Field(1500, ge=0, description="delay from delivered to read receipt (ms)")
    sim_presence_interval_s: float = Field(
        5.0, gt=0, description="a live session re-announces itself this often (seconds)"
    )
    sim_max_media_bytes: int = Field(
        10 * 1024 * 1024, gt=0, description="largest media the simulator carries (bytes)"
    )

    # --- neonize ---------------------------------------------------------------------------
    neonize_store_url: str = Field(
        "",
        description="device store shared by every worker: postgresql://... (lib/pq form) or empty "
        "for one SQLite file per instance under neonize_sqlite_dir",
    )
    neonize_sqlite_dir: str = Field("data/neonize", description="directory of per-instance SQLite stores")
    neonize_executor_threads: int = Field(
        512, ge=8, le=10_000, description="threads of the loop's default executor (one per live session)"
    )
    neonize_retry_initial_s: float = Field(1.0, gt=0, description="first reconnect delay (seconds)")
    neonize_retry_max_s: float = Field(60.0, gt=0, description="largest reconnect delay (seconds)")
    neonize_go_log_level: str = Field("WARNING", description="level of the Go library's logs")
