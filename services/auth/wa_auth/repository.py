"""Queries of the auth store. Every function takes an open ``AsyncSession``; callers commit."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from wa_auth.models import LoginFailure, User


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes: read them as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


async def get_user(session: AsyncSession, user_id: str) -> User | None:
    return await session.get(User, user_id)


async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    result = await session.execute(select(User).where(User.email_key == email.strip().lower()))
    return result.scalar_one_or_none()


async def get_user_by_key_digest(session: AsyncSession, digest: str) -> User | None:
    result = await session.execute(select(User).where(User.api_key_digest == digest))
    return result.scalar_one_or_none()


async def count_users(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(User))).scalar_one())


async def count_active_admins(session: AsyncSession) -> int:
    query = select(func.count()).select_from(User).where(User.role == "admin", User.active.is_(True))
    return int((await session.execute(query)).scalar_one())


async def list_users(session: AsyncSession, *, limit: int, skip: int) -> list[User]:
    query = select(User).order_by(User.created_at, User.id).offset(skip).limit(limit)
    return list((await session.execute(query)).scalars())


async def delete_user(session: AsyncSession, user: User) -> None:
    await session.delete(user)


async def count_failures(
    session: AsyncSession, scope: str, subject: str, since: datetime
) -> tuple[int, datetime | None]:
    """Failures of ``(scope, subject)`` at or after ``since``, and the oldest of them."""
    query = select(func.count(), func.min(LoginFailure.at)).where(
        LoginFailure.scope == scope, LoginFailure.subject == subject, LoginFailure.at >= since
    )
    count, oldest = (await session.execute(query)).one()
    return int(count), (as_utc(oldest) if oldest is not None else None)


async def add_failure(session: AsyncSession, scope: str, subject: str, at: datetime) -> int:
    """Record a failure (or an attempt being checked) of ``(scope, subject)``; returns its id."""
    row = LoginFailure(scope=scope, subject=subject, at=at)
    session.add(row)
    await session.flush()
    return row.id


async def delete_failures(session: AsyncSession, ids: list[int]) -> None:
    """Forget the failures ``ids`` (attempts that turned out right)."""
    if ids:
        await session.execute(delete(LoginFailure).where(LoginFailure.id.in_(ids)))


async def prune_failures(session: AsyncSession, scope: str, subject: str, before: datetime) -> None:
    """Forget failures of ``(scope, subject)`` older than ``before`` (outside the window)."""
    await session.execute(
        delete(LoginFailure).where(
            LoginFailure.scope == scope, LoginFailure.subject == subject, LoginFailure.at < before
        )
    )


async def prune_all_failures(session: AsyncSession, before: datetime) -> int:
    """Forget every failure older than ``before`` (any scope); returns how many."""
    result = await session.execute(delete(LoginFailure).where(LoginFailure.at < before))
    return int(getattr(result, "rowcount", 0) or 0)


async def clear_failures(session: AsyncSession, scope: str, subject: str) -> None:
    await session.execute(
        delete(LoginFailure).where(LoginFailure.scope == scope, LoginFailure.subject == subject)
    )
