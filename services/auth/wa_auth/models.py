"""SQLAlchemy models of the auth store: users and failed password checks.

Nothing secret is stored in clear: ``password_hash`` is an argon2id PHC string,
``api_key_ciphertext`` is AES-256-GCM (nonce || ciphertext || tag) and ``api_key_digest`` the
hex HMAC-SHA256 of the key used to look it up.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Index, Integer, LargeBinary, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    # Lower-cased email: uniqueness and lookups are case-insensitive.
    email_key: Mapped[str] = mapped_column(String(320), unique=True)
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    api_key_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    api_key_digest: Mapped[str] = mapped_column(String(64), unique=True)
    ip_allowlist: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Unix seconds: access tokens with an earlier ``iat`` are refused (set by a password change).
    tokens_valid_after: Mapped[int | None] = mapped_column(BigInteger, nullable=True, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LoginFailure(Base):
    """One failed password check (login or ``currentPassword``), or one still being verified,
    counted per ``scope`` and ``subject``: ``user`` (a user id), ``email`` (a lower-cased email
    naming no account) or ``ip`` (a client address, an IPv6 /64). See ``wa_auth.throttle``."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_scope_subject_at", "scope", "subject", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(8))
    subject: Mapped[str] = mapped_column(String(320))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
