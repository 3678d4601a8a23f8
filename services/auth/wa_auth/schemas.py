"""Wire schemas of the auth service (camelCase on the wire, as the API reference).

Request bodies refuse unknown fields (``extra="forbid"``), so a client cannot slip in fields it
may not set (mass assignment); violations are answered with 400 naming the field.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

Role = Literal["admin", "user"]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PASSWORD_MIN = 8
PASSWORD_MAX = 1024


def _check_email(value: str) -> str:
    value = value.strip()
    if len(value) > 320 or not _EMAIL.match(value):
        raise ValueError("must be an email address such as user@example.com")
    return value


def _check_cidrs(values: list[str]) -> list[str]:
    """Normalised CIDRs (``10.0.0.0/8``, ``2001:db8::/32``; a bare address becomes /32 or /128)."""
    out: list[str] = []
    for value in values:
        try:
            network = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an IP address or CIDR") from exc
        if str(network) not in out:
            out.append(str(network))
    if len(out) > 100:
        raise ValueError("at most 100 entries")
    return out


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class _Body(_Wire):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class LoginRequest(_Body):
    email: str = Field(max_length=320)
    password: str = Field(max_length=PASSWORD_MAX)


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


class UserCreate(_Body):
    email: str
    password: str = Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)
    first_name: str = Field(min_length=1, max_length=100)
    last_name: str = Field(min_length=1, max_length=100)
    role: Role = "user"
    active: bool = True
    ip_allowlist: list[str] = Field(default_factory=list)

    _email = field_validator("email")(_check_email)
    _cidrs = field_validator("ip_allowlist")(_check_cidrs)


class UserUpdate(_Body):
    """Fields to change. Users may change only their names and password (with currentPassword)."""

    email: str | None = None
    first_name: str | None = Field(None, min_length=1, max_length=100)
    last_name: str | None = Field(None, min_length=1, max_length=100)
    role: Role | None = None
    active: bool | None = None
    password: str | None = Field(None, min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)
    current_password: str | None = Field(None, max_length=PASSWORD_MAX)
    ip_allowlist: list[str] | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return None if value is None else _check_email(value)

    @field_validator("ip_allowlist")
    @classmethod
    def _cidrs(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _check_cidrs(value)


class IpAllowlistUpdate(_Body):
    ip_allowlist: list[str]

    _cidrs = field_validator("ip_allowlist")(_check_cidrs)


class PasswordChange(_Body):
    current_password: str = Field(max_length=PASSWORD_MAX)
    new_password: str = Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)


class ApiKeyView(_Wire):
    api_key: str


class ApiKeyResolveRequest(_Body):
    api_key: str = Field(max_length=256)


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
