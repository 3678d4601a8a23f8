"""Logic of the auth service: login with throttling, API keys, user administration, events.

Errors are raised as :class:`AuthError` (HTTP status + human-readable message, ``retry_after_s``
for 429, ``field`` for a 400 about one field); routes turn them into responses.

Every password check — login and the ``currentPassword`` of a password change — goes through
one :class:`~wa_auth.throttle.Throttle` (per account and per client address, counted in the auth
store; 429 with ``Retry-After``), and argon2 runs in a worker thread. Login also applies the
user's IP allow-list to the client address the gateway reports (``x-wa-client-ip``): a right
password from elsewhere (or from an unknown address, when the list is not empty) is answered
403 without token or key, and counts as a failure of that address. New passwords follow
``wa_auth.policy``. Every state change is committed first, then announced
on ``wa.events`` (``user.created``, ``user.updated``, ``user.deleted``, ``api_key.rotated``) with
:class:`wa_common.schemas.events.UserEventData` as data; a failed publish is logged, not raised
(the gateways' caches expire on their own within their TTL).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wa_auth import repository as repo
from wa_auth.crypto import (
    ApiKeyVault,
    TokenSigner,
    hash_password_async,
    password_needs_rehash,
    verify_password_async,
)
from wa_auth.errors import AuthError
from wa_auth.models import User
from wa_auth.policy import password_problem
from wa_auth.schemas import (
    ApiKeyView,
    Deleted,
    Identity,
    LoginResponse,
    LoginUser,
    Pagination,
    UserCreate,
    UserFields,
    UserList,
    UserUpdate,
    UserView,
    UserWithKey,
)
from wa_auth.settings import DEFAULT_ADMIN_PASSWORD, AuthSettings
from wa_auth.throttle import Attempt, ClientAddress, Throttle
from wa_common.bus import Bus
from wa_common.ids import new_id
from wa_common.logs import get_logger
from wa_common.schemas import Caller, Event, EventType, utcnow
from wa_common.schemas.events import UserEventData
from wa_common.settings import Profile

log = get_logger(__name__)

INVALID_CREDENTIALS = "invalid email or password"
ADDRESS_NOT_ALLOWED = "logins from this IP address are not allowed for this account"
SELF_EDITABLE = frozenset({"first_name", "last_name", "password", "current_password"})

__all__ = ["ADDRESS_NOT_ALLOWED", "INVALID_CREDENTIALS", "AuthError", "AuthService", "address_allowed"]


def address_allowed(allowlist: list[str] | None, address: str | None) -> bool:
    """True if ``allowlist`` is empty or ``address`` is inside one of its networks (an unknown
    address is inside none)."""
    if not allowlist:
        return True
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    for cidr in allowlist:
        try:
            network = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            continue
        if network.version == ip.version and ip in network:
            return True
    return False


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
        self.throttle = Throttle(
            sessions,
            window_s=settings.login_window_s,
            max_per_account=settings.login_max_failures_per_email,
            max_per_address=settings.login_max_failures_per_ip,
        )

    # ----------------------------------------------------------------- events

    async def _publish(self, event_type: EventType, user: User) -> None:
        if self.bus is None:
            return
        data = UserEventData(user_id=user.id, active=user.active, role=user.role)
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
        """Create the administrator from ``ADMIN_*`` if the store has no user (publishes user.created).

        ``ADMIN_PASSWORD`` must meet the password policy, except in the ``embedded`` profile
        (warned about at every start); otherwise the start fails naming the reason.
        """
        s = self.settings
        problem = password_problem(s.admin_password, email=s.admin_email)
        async with self.sessions() as session:
            if await repo.count_users(session) > 0:
                created = None
            else:
                if problem is not None and s.profile != Profile.EMBEDDED:
                    raise RuntimeError(
                        f"ADMIN_PASSWORD {problem} (the password policy exempts the seeded "
                        "administrator only with WA_PROFILE=embedded)"
                    )
                fields = UserFields(
                    email=s.admin_email,
                    first_name=s.admin_first_name,
                    last_name=s.admin_last_name,
                    role="admin",
                )
                try:
                    created = await self._insert_user(session, fields, s.admin_password)
                    await session.commit()
                except IntegrityError:
                    await session.rollback()  # another replica seeded it first
                    created = None
        if created is not None:
            log.info("default administrator created", user_id=created[0].id, email=created[0].email)
            await self._publish(EventType.USER_CREATED, created[0])
        await self.warn_weak_admin_password()

    async def warn_weak_admin_password(self) -> None:
        """Log a loud warning while the administrator's password is still the shipped default, or
        an ``ADMIN_PASSWORD`` that does not meet the password policy (embedded profile only)."""
        s = self.settings
        weak = {DEFAULT_ADMIN_PASSWORD}
        if password_problem(s.admin_password, email=s.admin_email) is not None:
            weak.add(s.admin_password)
        async with self.sessions() as session:
            admin = await repo.get_user_by_email(session, s.admin_email)
        if admin is None:
            return
        for candidate in sorted(weak):
            if await verify_password_async(admin.password_hash, candidate):
                log.warning(
                    "SECURITY: the administrator still has the shipped default password or one the "
                    "password policy refuses (allowed only in the embedded profile); change it now",
                    email=admin.email,
                )
                return

    # ------------------------------------------------------------------ login

    async def _check_password(
        self, account: tuple[str, str], client: ClientAddress, password_hash: str | None, password: str
    ) -> tuple[bool, Attempt]:
        """Verify ``password`` under the throttle (429 before any verification at the limit).

        A wrong password stays counted as a failure; on a right one the caller settles the
        returned attempt (``passed``, ``forget`` or ``refused_address``).
        """
        attempt = await self.throttle.begin(account, client)
        return await verify_password_async(password_hash, password) and password_hash is not None, attempt

    async def login(self, email: str, password: str, client: ClientAddress) -> LoginResponse:
        """Token and user (with API key) for valid credentials.

        Raises 429 (``retry_after_s`` set) once the account has ``AUTH_LOGIN_MAX_FAILURES_PER_EMAIL``
        failed password checks, or the client address ``..._PER_IP``, within ``AUTH_LOGIN_WINDOW_S``
        (logins and password changes count alike); 401 with one message for an unknown email or a
        wrong password; 401 for a disabled account; 403 (``ADDRESS_NOT_ALLOWED``) when the user
        has an IP allow-list and ``client.address`` is unknown or outside it.
        """
        email_key = email.strip().lower()
        async with self.sessions() as session:
            user = await repo.get_user_by_email(session, email_key)
        account = ("user", user.id) if user is not None else ("email", email_key)
        ok, attempt = await self._check_password(
            account, client, user.password_hash if user else None, password
        )
        if not ok or user is None:
            log.info("login failed", client_ip=client.address)
            raise AuthError(401, INVALID_CREDENTIALS)
        if not user.active:
            await self.throttle.forget(attempt)
            raise AuthError(401, "this account is disabled")
        if not address_allowed(user.ip_allowlist, client.address):
            await self.throttle.refused_address(attempt)
            log.warning(
                "login refused: address not in the allow-list", user_id=user.id, client_ip=client.address
            )
            raise AuthError(403, ADDRESS_NOT_ALLOWED)
        await self.throttle.passed(attempt)
        if password_needs_rehash(user.password_hash):
            await self._rehash(user, password)
        api_key = self.vault.open(user.api_key_ciphertext, user.id)
        token = self.signer.sign(user_id=user.id, role=user.role, now=utcnow())
        log.info("login succeeded", user_id=user.id, client_ip=client.address)
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

    async def _rehash(self, user: User, password: str) -> None:
        """Store a hash with the current parameters (unless the password changed meanwhile)."""
        new_hash = await hash_password_async(password)
        async with self.sessions() as session:
            current = await repo.get_user(session, user.id)
            if current is not None and current.password_hash == user.password_hash:
                current.password_hash = new_hash
                await session.commit()

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
        self, session: AsyncSession, fields: UserFields, password: str
    ) -> tuple[User, str]:
        if await repo.get_user_by_email(session, fields.email) is not None:
            raise AuthError(409, "a user with this email already exists")
        now = utcnow()
        user_id = new_id()
        api_key = self.vault.generate()
        user = User(
            id=user_id,
            email=fields.email,
            email_key=fields.email.lower(),
            first_name=fields.first_name,
            last_name=fields.last_name,
            role=fields.role,
            active=fields.active,
            password_hash=await hash_password_async(password),
            api_key_ciphertext=self.vault.seal(api_key, user_id),
            api_key_digest=self.vault.digest(api_key),
            ip_allowlist=list(fields.ip_allowlist),
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
                user, api_key = await self._insert_user(session, body, body.password)
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

    async def update_user(
        self,
        caller: Caller,
        user_id: str,
        body: UserUpdate,
        client: ClientAddress,
        *,
        reported_as: str = "password",
    ) -> UserView:
        """Change a user.

        Admins may set email, names, role, active, password and ipAllowlist. A user may change
        only their own names and password (the latter with ``currentPassword``); any other field
        is refused with 403 (mass assignment). Changing one's own password checks
        ``currentPassword`` under the login throttle (429), 400 naming ``currentPassword`` when it
        does not match; the new password may not be the account's email (400 naming
        ``reported_as``, the body's name of the new password). 409 for a taken email, the last
        admin, or a password that changed while this one was being checked.
        """
        self._require_self_or_admin(caller, user_id)
        fields = {name for name in body.model_fields_set if getattr(body, name) is not None}
        if not caller.is_admin:
            forbidden = sorted(fields - SELF_EDITABLE)
            if forbidden:
                names = ", ".join(UserUpdate.model_fields[f].alias or f for f in forbidden)
                raise AuthError(403, f"users may not change these fields of their account: {names}")
        checked_hash: str | None = None
        if body.password is not None:
            async with self.sessions() as session:
                target = await self._load(session, user_id)
            problem = password_problem(body.password, email=body.email or target.email)
            if problem is not None:
                raise AuthError(400, problem, field=reported_as)
            if caller.user_id == user_id:
                checked_hash = await self._check_current_password(target, body.current_password, client)
        async with self.sessions() as session:
            user = await self._load(session, user_id)
            if checked_hash is not None and user.password_hash != checked_hash:
                raise AuthError(409, "the password was changed meanwhile; try again")
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
                user.password_hash = await hash_password_async(body.password)
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

    async def _check_current_password(
        self, user: User, current_password: str | None, client: ClientAddress
    ) -> str:
        """The hash ``current_password`` matched (throttled like a login); 400 naming
        ``currentPassword`` when it is missing or does not match, 429 at the limit."""
        if current_password is None:
            raise AuthError(400, "required to change your own password", field="currentPassword")
        ok, attempt = await self._check_password(
            ("user", user.id), client, user.password_hash, current_password
        )
        if not ok:
            log.info(
                "password change refused: wrong current password", user_id=user.id, client_ip=client.address
            )
            raise AuthError(400, "does not match your password", field="currentPassword")
        await self.throttle.passed(attempt)
        return user.password_hash

    async def set_ip_allowlist(self, caller: Caller, user_id: str, cidrs: list[str]) -> UserView:
        """Admin only: replace the user's IP allow-list (empty: any address)."""
        self._require_admin(caller)
        return await self.update_user(
            caller, user_id, UserUpdate.model_construct(ip_allowlist=cidrs), ClientAddress()
        )

    async def change_own_password(
        self, caller: Caller, current_password: str, new_password: str, client: ClientAddress
    ) -> None:
        """The caller's password; 400 if ``current_password`` does not match, 429 when throttled."""
        # Both already validated by the route's PasswordChange: not validated again (a
        # validation error here would be a 500).
        body = UserUpdate.model_construct(password=new_password, current_password=current_password)
        await self.update_user(caller, caller.user_id, body, client, reported_as="newPassword")

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
