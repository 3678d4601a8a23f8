"""CPU seconds per process group, read from ``/proc/<pid>/stat`` (``utime + stime``, in clock
ticks of ``os.sysconf("SC_CLK_TCK")``), so a benchmark reports *cost* (CPU ms per operation summed
over every process of the system, RabbitMQ and PostgreSQL included) and not only time, which
drifts on a shared machine.

Groups: each service process of the cluster by name, ``rabbitmq`` (every process of the
``rabbitmq`` user: ``beam.smp`` and its helpers), ``postgresql`` (every process of the
``postgres`` user: the postmaster and one backend per pooled connection), and any extra named pid
(the load generator, the webhook receiver: reported beside the system, not in its total).

A process that starts during the window counts from zero; one that exits during it loses what it
used (pooled database connections and the broker live through a measurement). The idle
background is measured over a quiet window first and subtracted pro rata (``idle_rate``).
"""

from __future__ import annotations

import functools
import os
import pwd
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
SYSTEM_USERS = {"rabbitmq": "rabbitmq", "postgresql": "postgres"}


def _proc_cpu_s(pid: int) -> float | None:
    """utime + stime of ``pid`` in seconds; ``None`` when it has exited."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # Field 2 (comm) may contain spaces and parentheses: split after the last ")".
    fields = raw[raw.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def _pids_of_user(user: str) -> list[int]:
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


@dataclass
class Snapshot:
    at: float  # time.monotonic(), s
    per_pid: dict[tuple[str, int], float]  # (group, pid) -> CPU s


class CpuMeter:
    """Snapshots of CPU seconds per group. ``groups`` maps a name to a callable returning its
    current pids (service processes can be restarted mid-run, so they are resolved each time)."""

    def __init__(self, groups: Mapping[str, Callable[[], list[int]]]):
        self.groups = dict(groups)
        for name, user in SYSTEM_USERS.items():
            self.groups.setdefault(name, functools.partial(_pids_of_user, user))

    def snapshot(self) -> Snapshot:
        per_pid: dict[tuple[str, int], float] = {}
        for name, pids in self.groups.items():
            for pid in pids():
                cpu = _proc_cpu_s(pid)
                if cpu is not None:
                    per_pid[(name, pid)] = cpu
        return Snapshot(time.monotonic(), per_pid)

    @staticmethod
    def used(before: Snapshot, after: Snapshot) -> dict[str, float]:
        """CPU seconds per group between two snapshots."""
        out: dict[str, float] = {}
        for key, cpu in after.per_pid.items():
            out[key[0]] = out.get(key[0], 0.0) + max(0.0, cpu - before.per_pid.get(key, 0.0))
        return out

    def idle_rate(self, seconds: float) -> dict[str, float]:
        """CPU s per wall s per group while nothing is offered (the background: timers, lease
        renewals, the broker's own ticks). Blocks for ``seconds``."""
        before = self.snapshot()
        time.sleep(seconds)
        after = self.snapshot()
        wall = after.at - before.at
        return {k: v / wall for k, v in self.used(before, after).items()}


def per_operation_ms(
    used: Mapping[str, float], wall_s: float, idle: Mapping[str, float], operations: int
) -> dict[str, float]:
    """CPU ms per operation per group, the idle background (``idle`` CPU s/s times ``wall_s``)
    subtracted and floored at zero."""
    if operations <= 0:
        return {}
    return {
        name: max(0.0, cpu - idle.get(name, 0.0) * wall_s) * 1000 / operations for name, cpu in used.items()
    }
