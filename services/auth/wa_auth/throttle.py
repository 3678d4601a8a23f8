"""Throttling of password checks: one component for login and for ``currentPassword``.

Every check of a password against an account goes through :class:`Throttle`, keyed by

- the account: ``("user", <user id>)``, or ``("email", <lower-cased email>)`` for a login naming
  no account (so unknown emails are throttled like known ones and answer alike); at most
  ``AUTH_LOGIN_MAX_FAILURES_PER_EMAIL`` (10) failures per ``AUTH_LOGIN_WINDOW_S`` (60 s);
- the client address: ``("ip", <address>)`` (an IPv6 address counts as its /64, which one
  client usually holds whole); at most ``AUTH_LOGIN_MAX_FAILURES_PER_IP`` (50) per window.

Logins and password changes share these counters. A key at its limit is refused with
:class:`~wa_auth.errors.AuthError` 429 and ``retry_after_s`` (seconds until its oldest failure
leaves the window); the refused attempt is not counted.

Check-and-count is atomic, so parallel requests cannot overshoot the limits (across replicas
too: the counts live in the auth store, table ``login_failures``):

1. :meth:`Throttle.begin`, in one short transaction that serialises per key (PostgreSQL:
   ``pg_advisory_xact_lock`` on a 64-bit hash of each key, taken in a fixed order so two
   requests cannot deadlock; SQLite: the database write lock, taken by the first statement),
   prunes failures older than the window, counts the rest (an attempt still being verified
   counts as a failure) and either refuses or records this attempt for every key, then commits.
2. The caller verifies the password (argon2, slow) outside any transaction.
3. A wrong password leaves the attempt recorded: it is the failure. :meth:`Throttle.passed`
   (right password) forgets the attempt and the account's earlier failures;
   :meth:`Throttle.forget` forgets only the attempt; :meth:`Throttle.refused_address` keeps it
   as a failure of the address only (right password from an address the account does not allow).

So with a limit of N, at most N checks of one account's password run per window, whatever the
concurrency. An attempt whose process dies between 1 and 3 stays a failure (fails safe).
:meth:`Throttle.run_pruning` (started by ``main``) forgets every row once it left the window, so
the table holds at most one window of attempts whatever keys an attacker sprays.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wa_auth import repository as repo
from wa_auth.errors import AuthError
from wa_common.logs import get_logger
from wa_common.schemas import utcnow

log = get_logger(__name__)

ACCOUNT_SCOPES = frozenset({"user", "email"})


def normalise_address(value: str | None) -> str | None:
    """``value`` as a canonical IP address (IPv4-mapped IPv6 as IPv4), or ``None`` if it is not one."""
    if not value:
        return None
    try:
        ip = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


@dataclass(frozen=True)
class ClientAddress:
    """Where a request comes from.

    ``address``: the end client's address as the gateway reported it (``x-wa-client-ip``),
    ``None`` when it sent none (or not an address); IP allow-lists are judged on it alone.
    ``peer``: the TCP peer of auth (normally a gateway); throttling falls back to it when
    ``address`` is unknown, so a direct caller is still limited per address.
    """

    address: str | None = None
    peer: str | None = None

    @property
    def throttle_subject(self) -> str | None:
        """The per-address throttling key: the address, an IPv6 address as its /64."""
        value = self.address or normalise_address(self.peer)
        if value is None:
            return None
        ip = ipaddress.ip_address(value)
        if ip.version == 6:
            return str(ipaddress.ip_network(f"{ip}/64", strict=False))
        return value


@dataclass(frozen=True)
class Key:
    scope: str
    subject: str
    limit: int

    @property
    def lock_id(self) -> int:
        """Signed 64-bit id of this key's advisory lock (PostgreSQL)."""
        digest = hashlib.blake2b(
            f"wa-auth throttle\x1f{self.scope}\x1f{self.subject}".encode(), digest_size=8
        )
        return int.from_bytes(digest.digest(), "big", signed=True)


@dataclass
class Attempt:
    """A password check admitted by :meth:`Throttle.begin`: its recorded rows, one per key."""

    keys: list[Key]
    row_ids: dict[Key, int] = field(default_factory=dict)

    @property
    def account(self) -> Key:
        return next(k for k in self.keys if k.scope in ACCOUNT_SCOPES)


class Throttle:
    """Counts failed password checks per account and per client address in the auth store."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        window_s: int,
        max_per_account: int,
        max_per_address: int,
    ):
        self.sessions = sessions
        self.window = timedelta(seconds=window_s)
        self.max_per_account = max_per_account
        self.max_per_address = max_per_address

    def keys(self, account: tuple[str, str], client: ClientAddress) -> list[Key]:
        scope, subject = account
        if scope not in ACCOUNT_SCOPES:
            raise ValueError(f"not an account scope: {scope}")
        keys = [Key(scope, subject, self.max_per_account)]
        address = client.throttle_subject
        if address is not None:
            keys.append(Key("ip", address, self.max_per_address))
        return keys

    async def _lock(self, session: AsyncSession, keys: list[Key]) -> None:
        connection = await session.connection()
        if connection.dialect.name == "postgresql":
            for lock_id in sorted({k.lock_id for k in keys}):
                await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})
        # SQLite: the first statement of the transaction is a DELETE (the prune), which takes the
        # database's write lock (waiting up to its busy timeout): writers are serialised.

    def _wait_s(self, oldest: datetime, now: datetime) -> int:
        return max(1, math.ceil((oldest + self.window - now).total_seconds()))

    async def begin(self, account: tuple[str, str], client: ClientAddress) -> Attempt:
        """Admit one password check for ``account`` from ``client`` and record it as a failure.

        Raises ``AuthError(429)`` with ``retry_after_s`` when a key reached its limit (nothing is
        recorded then).
        """
        keys = self.keys(account, client)
        now = utcnow()
        since = now - self.window
        async with self.sessions() as session:
            await self._lock(session, keys)
            waits: list[int] = []
            for key in keys:
                await repo.prune_failures(session, key.scope, key.subject, since)
                count, oldest = await repo.count_failures(session, key.scope, key.subject, since)
                if count >= key.limit and oldest is not None:
                    waits.append(self._wait_s(oldest, now))
            if waits:
                await session.commit()
                wait = max(waits)
                log.warning("password checks throttled", scopes=[k.scope for k in keys], retry_after_s=wait)
                raise AuthError(
                    429, f"too many failed password attempts; retry in {wait} s", retry_after_s=wait
                )
            attempt = Attempt(keys)
            for key in keys:
                attempt.row_ids[key] = await repo.add_failure(session, key.scope, key.subject, now)
            await session.commit()
        return attempt

    async def prune(self) -> int:
        """Forget every failure outside the window, of any key: keys that are never tried again
        (a spray of random emails or addresses) must not keep their rows. Returns how many."""
        async with self.sessions() as session:
            removed = await repo.prune_all_failures(session, utcnow() - self.window)
            await session.commit()
        return removed

    async def run_pruning(self) -> None:
        """:meth:`prune` once per window, until cancelled (errors are logged, never fatal)."""
        while True:
            await asyncio.sleep(self.window.total_seconds())
            try:
                removed = await self.prune()
            except Exception as exc:
                log.warning("pruning old password-check failures failed", error_type=type(exc).__name__)
            else:
                if removed:
                    log.info("old password-check failures pruned", removed=removed)

    async def _delete(self, attempt: Attempt, keys: list[Key], *, clear_account: bool) -> None:
        ids = [attempt.row_ids[k] for k in keys if k in attempt.row_ids]
        async with self.sessions() as session:
            if clear_account:
                account = attempt.account
                await repo.clear_failures(session, account.scope, account.subject)
            await repo.delete_failures(session, ids)
            await session.commit()

    async def passed(self, attempt: Attempt) -> None:
        """The password was right: forget the attempt and the account's earlier failures."""
        await self._delete(attempt, attempt.keys, clear_account=True)

    async def forget(self, attempt: Attempt) -> None:
        """The password was right but the check is refused for another reason (a disabled
        account): forget the attempt only."""
        await self._delete(attempt, attempt.keys, clear_account=False)

    async def refused_address(self, attempt: Attempt) -> None:
        """The password was right from an address the account does not allow: it stays a
        failure of the address, not of the account."""
        await self._delete(attempt, [k for k in attempt.keys if k.scope != "ip"], clear_account=False)
