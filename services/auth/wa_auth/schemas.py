"""Wire schemas of the auth service (camelCase on the wire, as the API reference).

Request bodies refuse unknown fields (``extra="forbid"``), so a client cannot slip in fields it
may not set (mass assignment); violations are answered with 400 naming the field. Validation
errors never carry the submitted values (``hide_input_in_errors``; only a refused allow-list
entry is quoted, escaped), so no password reaches an answer or a log.

Every string of a request body is bounded and refuses NUL characters and lone surrogates (which
JSON can carry as ``"\\ud800"``) with 400 naming the field; names also refuse other control
characters:

| field | limit |
|---|---|
| ``email`` | 320 characters (an email address such as ``user@example.com``) |
| ``firstName``, ``lastName`` | 1-100 characters, no control characters |
| ``password`` (login), ``currentPassword`` | 1024 characters |
| ``password`` (new), ``newPassword`` | the password policy (``wa_auth.policy``): 8-128 characters |
| ``ipAllowlist`` | at most 100 entries of at most 64 characters, each an IP address or CIDR |
| ``apiKey`` | 256 characters |
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from wa_auth.policy import check_new_password
from wa_common.ids import ID_PATTERN
from wa_common.schemas.text import text_problem

Role = Literal["admin", "user"]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
EMAIL_MAX = 320
NAME_MAX = 100
# A password typed at login or as currentPassword: generous (accounts made before the policy
# may have up to 1024 characters); a new password is held to the policy's 128.
PASSWORD_MAX = 1024
CIDR_MAX = 64
ALLOWLIST_MAX = 100
API_KEY_MAX = 256
# A user id as auth makes them (a ULID) or as a path segment may carry one.
USER_ID_PATTERN = ID_PATTERN


def plain_text(value: object) -> object:
    """``value`` if it is not a string with a NUL character or a lone surrogate, else
    ``ValueError`` (runs before the type check, so every such string gets this message).

    PostgreSQL text cannot hold NUL, and a lone surrogate cannot be encoded (UTF-8, argon2,
    HMAC): both used to end in a 500.
    """
    if isinstance(value, str):
        problem = text_problem(value)
        if problem:
            raise ValueError(problem)
    return value


def printable(value: str, limit: int = 64) -> str:
    """``value`` with every non-printable character (NUL, lone surrogates, ...) escaped, cut to
    ``limit`` characters: safe to put into an answer or a log line."""
    if not value.isprintable():
        value = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in value)
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _no_controls(value: str) -> str:
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise ValueError("must not contain control characters")
    return value


# Bounded strings: the content (NUL, lone surrogates) is checked first, then the length.
Email = Annotated[str, Field(max_length=EMAIL_MAX), BeforeValidator(plain_text)]
Name = Annotated[
    str, Field(min_length=1, max_length=NAME_MAX), BeforeValidator(plain_text), AfterValidator(_no_controls)
]
TypedPassword = Annotated[str, Field(max_length=PASSWORD_MAX), BeforeValidator(plain_text)]
NewPassword = Annotated[str, Field(max_length=PASSWORD_MAX), BeforeValidator(plain_text)]
Cidr = Annotated[str, Field(max_length=CIDR_MAX), BeforeValidator(plain_text)]
Allowlist = Annotated[list[Cidr], Field(max_length=ALLOWLIST_MAX)]


def _check_email(value: str) -> str:
    value = value.strip()
    if (
        len(value) > EMAIL_MAX
        or not _EMAIL.match(value)
        or any(unicodedata.category(c) == "Cc" for c in value)
    ):
        raise ValueError("must be an email address such as user@example.com")
    return value


def _check_cidrs(values: list[str]) -> list[str]:
    """Normalised CIDRs (``10.0.0.0/8``, ``2001:db8::/32``; a bare address becomes /32 or /128)."""
    out: list[str] = []
    for index, value in enumerate(values):
        try:
            network = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError as exc:
            raise ValueError(f"entry {index} ({value!r}) is not an IP address or CIDR") from exc
        if str(network) not in out:
            out.append(str(network))
    return out


def _check_new_password(value: str, info: ValidationInfo) -> str:
    """The password policy; ``email`` (validated before, when the body has one) is context."""
    email = info.data.get("email") if info.data else None
    return check_new_password(value, email=email if isinstance(email, str) else None)


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class _Body(_Wire):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", hide_input_in_errors=True
    )

    @model_validator(mode="before")
    @classmethod
    def _plain_keys(cls, data: object) -> object:
        """Refuse a key with NUL or a lone surrogate by name (pydantic would say only "body")."""
        if isinstance(data, dict):
            for key in data:
                if isinstance(key, str):
                    try:
                        plain_text(key)
                    except ValueError as exc:
                        raise ValueError(f"field name {printable(key)}: {exc}") from None
        return data


class LoginRequest(_Body):
    email: Email
    password: TypedPassword


class LoginUser(_Wire):
    id: str
    email: str
    first_name: str
    last_name: str
    api_key: str


class LoginResponse(_Wire):
    """``POST /api/auth/login``: ``{token, user{id,email,firstName,lastName,apiKey}}``."""

    token: str
    user: LoginUser


class UserView(_Wire):
    id: str
    email: str
    first_name: str
    last_name: str
    role: Role
    active: bool
    ip_allowlist: list[str]
    created_at: datetime
    updated_at: datetime


class UserWithKey(UserView):
    api_key: str


class Pagination(_Wire):
    total: int
    limit: int
    skip: int
    has_more: bool


class UserList(_Wire):
    users: list[UserView]
    pagination: Pagination


class UserFields(_Body):
    """A new user without its password (also what ``ADMIN_*`` seeds)."""

    email: Email
    first_name: Name
    last_name: Name
    role: Role = "user"
    active: bool = True
    ip_allowlist: Allowlist = Field(default_factory=list)

    _email = field_validator("email")(_check_email)
    _cidrs = field_validator("ip_allowlist")(_check_cidrs)


class UserCreate(UserFields):
    password: NewPassword

    _password = field_validator("password")(_check_new_password)


class UserUpdate(_Body):
    """Fields to change. Users may change only their names and password (with currentPassword)."""

    email: Email | None = None
    first_name: Name | None = None
    last_name: Name | None = None
    role: Role | None = None
    active: bool | None = None
    password: NewPassword | None = None
    current_password: TypedPassword | None = None
    ip_allowlist: Allowlist | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return None if value is None else _check_email(value)

    @field_validator("password")
    @classmethod
    def _password(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _check_new_password(value, info)

    @field_validator("ip_allowlist")
    @classmethod
    def _cidrs(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _check_cidrs(value)


class IpAllowlistUpdate(_Body):
    ip_allowlist: Allowlist

    _cidrs = field_validator("ip_allowlist")(_check_cidrs)


class PasswordChange(_Body):
    current_password: TypedPassword
    new_password: NewPassword

    _password = field_validator("new_password")(_check_new_password)


class ApiKeyView(_Wire):
    api_key: str


class ApiKeyResolveRequest(_Body):
    api_key: Annotated[str, Field(max_length=API_KEY_MAX), BeforeValidator(plain_text)]


class Identity(_Wire):
    """What the gateway needs to admit a caller: ``{userId, role, active, ipAllowlist,
    tokensValidAfter}``; ``tokensValidAfter`` (unix seconds or null): access tokens issued
    (``iat``) before it are refused."""

    user_id: str
    role: Role
    active: bool
    ip_allowlist: list[str]
    tokens_valid_after: int | None = None


class Deleted(_Wire):
    success: bool = True
    message: str
