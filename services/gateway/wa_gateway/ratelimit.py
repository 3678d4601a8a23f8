"""Token buckets per key, in this replica's memory: the per-user request rate limit, and the
per-address throttle of failed API-key lookups (``auth/layer.py``).

Each user (the identity behind an API key or token) may make ``GATEWAY_RATE_LIMIT_PER_S``
requests per second with bursts up to ``GATEWAY_RATE_LIMIT_BURST``; above it the gateway answers
429 with ``Retry-After`` (whole seconds). Buckets are per replica: with N gateway replicas behind
a load balancer a user may reach up to N times the rate — acceptable for abuse protection; usage
*limits* (per period) are enforced cluster-wide by the stats service (``limits.py``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self._max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def acquire(self, key: str, now: float | None = None) -> float:
        """Take one token for ``key``: 0.0 if allowed, else the seconds until one is available."""
        if not self.enabled:
            return 0.0
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._evict(now)
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0 - 1e-9:
            bucket.tokens = max(0.0, bucket.tokens - 1.0)
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def peek(self, key: str, now: float | None = None) -> float:
        """As :meth:`acquire` without taking a token: 0.0 while ``key`` has one left."""
        if not self.enabled:
            return 0.0
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        return 0.0 if tokens >= 1.0 - 1e-9 else (1.0 - tokens) / self.rate

    def _evict(self, now: float) -> None:
        full_after = self.burst / self.rate
        for key in [k for k, b in self._buckets.items() if now - b.updated >= full_after]:
            del self._buckets[key]
        if len(self._buckets) >= self._max_keys:
            self._buckets.clear()

    @staticmethod
    def retry_after(wait_s: float) -> str:
        return str(max(1, math.ceil(wait_s)))
