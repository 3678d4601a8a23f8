"""Logic of the auth service: login with throttling, API keys, user administration, events.

Errors are raised as :class:`AuthError` (HTTP status + human-readable message, ``retry_after_s``
for 429); routes turn them into responses. Every state change is committed first, then announced
on ``wa.events`` (``user.created``, ``user.updated``, ``user.deleted``, ``api_key.rotated``) with
:class:`wa_common.schemas.events.UserEventData` as data; a failed publish is logged, not raised
(the gateways' caches expire on their own within their TTL).
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wa_auth import repository as repo
from wa_auth.crypto import (
    ApiKeyVault,
    TokenSigner,
    hash_password,
    password_needs_rehash,
    verify_password,
)
from wa_auth.models import User
from wa_auth.schemas import (
    ApiKeyView,
    Deleted,
    Identity,
    LoginResponse,
    LoginUser,
    Pagination,
    UserCreate,
    UserList,
    UserUpdate,
    UserView,
    UserWithKey,
)
from wa_auth.settings import DEFAULT_ADMIN_PASSWORD, AuthSettings
from wa_common.bus import Bus
from wa_common.ids import new_id
from wa_common.logs import get_logger
from wa_common.schemas import Caller, Event, EventType, utcnow
from wa_common.schemas.events import UserEventData

log = get_logger(__name__)

INVALID_CREDENTIALS = "invalid email or password"
SELF_EDITABLE = frozenset({"first_name", "last_name", "password", "current_password"})


class AuthError(Exception):
    """A refusal with an HTTP status (400, 401, 403, 404, 409, 429) and a message for the client."""

    def __init__(self, status: int, message: str, *, retry_after_s: int | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s


def user_view(user: User) -> UserView:
    return UserView(
        id=user.id,
        email=user.email,
        first_name=user.first_name,
        last_name=user.last_name,
        role=user.role,
        active=user.active,
        ip_allowlist=list(user.ip_allowlist or []),
        created_at=repo.as_utc(user.created_at),
        updated_at=repo.as_utc(user.updated_at),
    )


def identity_of(user: User) -> Identity:
    return Identity(
        user_id=user.id,
        role=user.role,
        active=user.active,
        ip_allowlist=list(user.ip_allowlist or []),
        tokens_valid_after=user.tokens_valid_after,
    )


class AuthService:
    def __init__(
        self,
        settings: AuthSettings,
        sessions: async_sessionmaker[AsyncSession],
        bus: Bus | None,
        signer: TokenSigner,
        vault: ApiKeyVault,
    ):
        self.settings = settings
        self.sessions = sessions
        self.bus = bus
        self.signer = signer
        self.vault = vault

    # ----------------------------------------------------------------- events

    async def _publish(self, event_type: EventType, user: User) -> None:
        if self.bus is None:
            return
        data = UserEventData(userId=user.id, active=user.active, role=user.role)
        event = Event(type=event_type, user_id=user.id, data=data.model_dump(by_alias=True))
        try:
            await self.bus.publish_event(event)
        except Exception as exc:
            log.error(
                "could not publish user event",
                event_type=str(event_type),
                user_id=user.id,
                error=str(exc),
            )

    # ------------------------------------------------------------ first start

    async def seed_admin(self) -> None:
        """Create the administrator from ``ADMIN_*`` if the store has no user (publishes user.created)."""
        s = self.settings
        async with self.sessions() as session:
            if await repo.count_users(session) > 0:
                created = None
            else:
                try:
                    created = await self._insert_user(
                        session,
                        UserCreate(
                            email=s.admin_email,
                            password=s.admin_password if len(s.admin_password) >= 8 else "x" * 8,
                            first_name=s.admin_first_name,
                            last_name=s.admin_last_name,
                            role="admin",
                        ),
                        password_override=s.admin_password,
                    )
                    await session.commit()
                except IntegrityError:
                    await session.rollback()  # another replica seeded it first
                    created = None
        if created is not None:
            log.info("default administrator created", user_id=created[0].id, email=created[0].email)
            await self._publish(EventType.USER_CREATED, created[0])
        await self.warn_default_admin_password()

    async def warn_default_admin_password(self) -> None:
        """Log a loud warning while the administrator's password is still the shipped default."""
        async with self.sessions() as session:
            admin = await repo.get_user_by_email(session, self.settings.admin_email)
        if admin is not None and verify_password(admin.password_hash, DEFAULT_ADMIN_PASSWORD):
            log.warning(
                "SECURITY: the administrator still has the shipped default password; change it now",
                email=admin.email,
            )

    # ------------------------------------------------------------------ login

    async def _throttled(self, session: AsyncSession, scope: str, subject: str, limit: int) -> int | None:
        """Seconds to wait if ``subject`` reached ``limit`` failures in the window, else None."""
        now = utcnow()
        window = timedelta(seconds=self.settings.login_window_s)
        count, oldest = await repo.count_failures(session, scope, subject, now - window)
        if count < limit or oldest is None:
            return None
        return max(1, math.ceil((oldest + window - now).total_seconds()))

    async def login(self, email: str, password: str, client_ip: str | None) -> LoginResponse:
        """Token and user (with API key) for valid credentials.

        Raises 429 (``retry_after_s`` set) after ``AUTH_LOGIN_MAX_FAILURES_PER_EMAIL`` failures for
        the email or ``..._PER_IP`` for the address within ``AUTH_LOGIN_WINDOW_S``; 401 with one
        message for an unknown email or a wrong password; 401 for a disabled account.
        """
        s = self.settings
        email_key = email.strip().lower()
        async with self.sessions() as session:
            waits = [await self._throttled(session, "email", email_key, s.login_max_failures_per_email)]
            if client_ip:
                waits.append(await self._throttled(session, "ip", client_ip, s.login_max_failures_per_ip))
            wait = max((w for w in waits if w is not None), default=None)
            if wait is not None:
                log.warning("login throttled", client_ip=client_ip)
                raise AuthError(429, f"too many failed logins; retry in {wait} s", retry_after_s=wait)

            user = await repo.get_user_by_email(session, email_key)
            ok = verify_password(user.password_hash if user else None, password)
            if not ok or user is None:
                now = utcnow()
                since = now - timedelta(seconds=s.login_window_s)
                subjects = [("email", email_key)] + ([("ip", client_ip)] if client_ip else [])
                for scope, subject in subjects:
                    await repo.add_failure(session, scope, subject, now)
                    await repo.prune_failures(session, scope, subject, since)
                await session.commit()
                log.info("login failed", client_ip=client_ip)
                raise AuthError(401, INVALID_CREDENTIALS)
            if not user.active:
                raise AuthError(401, "this account is disabled")
            await repo.clear_failures(session, "email", email_key)
            if password_needs_rehash(user.password_hash):
                user.password_hash = hash_password(password)
            await session.commit()
            api_key = self.vault.open(user.api_key_ciphertext, user.id)
        token = self.signer.sign(user_id=user.id, role=user.role, now=utcnow())
        log.info("login succeeded", user_id=user.id, client_ip=client_ip)
        return LoginResponse(
            token=token,
            user=LoginUser(
                id=user.id,
                email=user.email,
                first_name=user.first_name,
                last_name=user.last_name,
                api_key=api_key,
            ),
        )

    # --------------------------------------------------------------- identity

    async def resolve_api_key(self, api_key: str) -> Identity:
        """The identity owning ``api_key``; 401 if no user has it."""
        async with self.sessions() as session:
            user = await repo.get_user_by_key_digest(session, self.vault.digest(api_key))
        if user is None:
            raise AuthError(401, "invalid API key")
        return identity_of(user)

    async def identity(self, user_id: str) -> Identity:
        """The identity of ``user_id`` (role, active, allow-list); 404 if it does not exist."""
        async with self.sessions() as session:
            user = await repo.get_user(session, user_id)
        if user is None:
            raise AuthError(404, "user not found")
        return identity_of(user)

    # ---------------------------------------------------------- administration

    @staticmethod
    def _require_admin(caller: Caller) -> None:
        if not caller.is_admin:
            raise AuthError(403, "this operation needs the admin role")

    @staticmethod
    def _require_self_or_admin(caller: Caller, user_id: str) -> None:
        if not caller.is_admin and caller.user_id != user_id:
            raise AuthError(403, "users may only act on their own account")

    async def _load(self, session: AsyncSession, user_id: str) -> User:
        user = await repo.get_user(session, user_id)
        if user is None:
            raise AuthError(404, f"user {user_id} not found")
        return user

    async def _insert_user(
        self, session: AsyncSession, body: UserCreate, *, password_override: str | None = None
    ) -> tuple[User, str]:
        if await repo.get_user_by_email(session, body.email) is not None:
            raise AuthError(409, "a user with this email already exists")
        now = utcnow()
        user_id = new_id()
        api_key = self.vault.generate()
        user = User(
            id=user_id,
            email=body.email,
            email_key=body.email.lower(),
            first_name=body.first_name,
            last_name=body.last_name,
            role=body.role,
            active=body.active,
            password_hash=hash_password(password_override or body.password),
            api_key_ciphertext=self.vault.seal(api_key, user_id),
            api_key_digest=self.vault.digest(api_key),
            ip_allowlist=list(body.ip_allowlist),
            created_at=now,
            updated_at=now,
        )
        session.add(user)
        await session.flush()
        return user, api_key

    async def create_user(self, caller: Caller, body: UserCreate) -> UserWithKey:
        """Admin only: a new user with its API key; 409 if the email is taken."""
        self._require_admin(caller)
        async with self.sessions() as session:
            try:
                user, api_key = await self._insert_user(session, body)
                await session.commit()
            except IntegrityError as exc:
                raise AuthError(409, "a user with this email already exists") from exc
        await self._publish(EventType.USER_CREATED, user)
        log.info("user created", user_id=user.id, by=caller.user_id)
        return UserWithKey(**user_view(user).model_dump(), api_key=api_key)

    async def list_users(self, caller: Caller, *, limit: int, skip: int) -> UserList:
        """Admin only: one page of users (oldest first) with ``pagination``."""
        self._require_admin(caller)
        async with self.sessions() as session:
            total = await repo.count_users(session)
            users = await repo.list_users(session, limit=limit, skip=skip)
        return UserList(
            users=[user_view(u) for u in users],
            pagination=Pagination(total=total, limit=limit, skip=skip, has_more=skip + len(users) < total),
        )

    async def get_user(self, caller: Caller, user_id: str) -> UserView:
        """Admin, or the user themself."""
        self._require_self_or_admin(caller, user_id)
        async with self.sessions() as session:
            return user_view(await self._load(session, user_id))

    async def _guard_last_admin(self, session: AsyncSession, user: User, *, removing: bool) -> None:
        if removing and user.role == "admin" and user.active and await repo.count_active_admins(session) <= 1:
            raise AuthError(409, "the last active administrator cannot be removed, demoted or disabled")

    async def update_user(self, caller: Caller, user_id: str, body: UserUpdate) -> UserView:
        """Change a user.

        Admins may set email, names, role, active, password and ipAllowlist. A user may change
        only their own names and password (the latter with ``currentPassword``); any other field
        is refused with 403 (mass assignment). 409 for a taken email or the last admin.
        """
        self._require_self_or_admin(caller, user_id)
        fields = {name for name in body.model_fields_set if getattr(body, name) is not None}
        if not caller.is_admin:
            forbidden = sorted(fields - SELF_EDITABLE)
            if forbidden:
                names = ", ".join(UserUpdate.model_fields[f].alias or f for f in forbidden)
                raise AuthError(403, f"users may not change these fields of their account: {names}")
        async with self.sessions() as session:
            user = await self._load(session, user_id)
            if body.password is not None and caller.user_id == user_id:
                if body.current_password is None:
                    raise AuthError(400, "currentPassword: required to change your own password")
                if not verify_password(user.password_hash, body.current_password):
                    raise AuthError(400, "currentPassword: does not match your password")
            demoting = body.role is not None and body.role != "admin"
            disabling = body.active is False
            await self._guard_last_admin(session, user, removing=demoting or disabling)
            if body.email is not None and body.email.lower() != user.email_key:
                if await repo.get_user_by_email(session, body.email) is not None:
                    raise AuthError(409, "a user with this email already exists")
                user.email, user.email_key = body.email, body.email.lower()
            if body.first_name is not None:
                user.first_name = body.first_name
            if body.last_name is not None:
                user.last_name = body.last_name
            if body.role is not None:
                user.role = body.role
            if body.active is not None:
                user.active = body.active
            if body.password is not None:
                user.password_hash = hash_password(body.password)
                # Every access token issued so far stops working (the gateways drop their cached
                # identity on user.updated); tokens have one-second ``iat``, so one issued in the
                # same second as the change still passes.
                user.tokens_valid_after = int(utcnow().timestamp())
            if body.ip_allowlist is not None:
                user.ip_allowlist = list(body.ip_allowlist)
            user.updated_at = utcnow()
            try:
                await session.commit()
            except IntegrityError as exc:
                raise AuthError(409, "a user with this email already exists") from exc
        await self._publish(EventType.USER_UPDATED, user)
        changed = sorted(fields - {"password", "current_password"})
        log.info("user updated", user_id=user.id, by=caller.user_id, fields=changed)
        return user_view(user)

    async def set_ip_allowlist(self, caller: Caller, user_id: str, cidrs: list[str]) -> UserView:
        """Admin only: replace the user's IP allow-list (empty: any address)."""
        self._require_admin(caller)
        return await self.update_user(caller, user_id, UserUpdate(ip_allowlist=cidrs))

    async def change_own_password(self, caller: Caller, current_password: str, new_password: str) -> None:
        """The caller's password; 400 if ``current_password`` does not match."""
        await self.update_user(
            caller,
            caller.user_id,
            UserUpdate(password=new_password, current_password=current_password),
        )

    async def rotate_api_key(self, caller: Caller, user_id: str) -> ApiKeyView:
        """Admin, or the user themself: a new API key; the old one stops working at once.

        Publishes ``api_key.rotated`` so every gateway drops its cached identity for the user.
        """
        self._require_self_or_admin(caller, user_id)
        async with self.sessions() as session:
            user = await self._load(session, user_id)
            api_key = self.vault.generate()
            user.api_key_ciphertext = self.vault.seal(api_key, user.id)
            user.api_key_digest = self.vault.digest(api_key)
            user.updated_at = utcnow()
            await session.commit()
        await self._publish(EventType.API_KEY_ROTATED, user)
        log.info("api key rotated", user_id=user.id, by=caller.user_id)
        return ApiKeyView(api_key=api_key)

    async def delete_user(self, caller: Caller, user_id: str) -> Deleted:
        """Admin only. Publishes ``user.deleted`` (the worker deletes the user's instances)."""
        self._require_admin(caller)
        async with self.sessions() as session:
            user = await self._load(session, user_id)
            await self._guard_last_admin(session, user, removing=True)
            await repo.delete_user(session, user)
            await session.commit()
        await self._publish(EventType.USER_DELETED, user)
        log.info("user deleted", user_id=user.id, by=caller.user_id)
        return Deleted(message=f"User {user_id} deleted successfully")

    def jwks(self) -> dict[str, Any]:
        return self.signer.jwks()
