"""Read queries about instances, answered from the store by any worker (competing consumers on
``wa.queries``): instances, status, QR code, activity log, the events feed, stored contacts,
chat history."""

from __future__ import annotations

from datetime import timedelta

from wa_common.bus.router import RequestError
from wa_common.schemas import Query, Reply
from wa_common.schemas.contacts import DbContactsPage
from wa_common.schemas.events import EVENT_NAME_ALIASES
from wa_common.schemas.instances import (
    ActivityPage,
    EventsPage,
    InstanceDetail,
    InstanceList,
    InstanceState,
    QrCode,
)
from wa_common.schemas.messages import ChatMessagesPage
from wa_common.schemas.session import (
    ActivityQuery,
    ChatMessagesQuery,
    ContactsQuery,
    EventsQuery,
    ListInstances,
)
from wa_common.schemas.status import InstanceStatus
from wa_session_worker.repository.base import Repository
from wa_session_worker.service import views
from wa_session_worker.service.access import instance_for, require_caller
from wa_session_worker.service.sessions import Running


def aliased(names: list[str] | None) -> list[str] | None:
    """Split comma lists and map old event/action names (``connection_opened``) to canonical."""
    if not names:
        return None
    out: list[str] = []
    for item in names:
        for name in item.split(","):
            name = name.strip()
            if name:
                out.append(EVENT_NAME_ALIASES.get(name, name))
    return out or None


class Queries:
    """``running``: the sessions of this worker (the QR answer tells a logged-out instance whose
    session still runs here from one that waits for a reconnect)."""

    def __init__(self, repo: Repository, running: Running) -> None:
        self.repo = repo
        self.running = running

    async def get_instance(self, q: Query) -> InstanceDetail:
        rec = await instance_for(self.repo, q.caller, q.instance_id)
        return views.instance_detail(rec)

    async def list_instances(self, q: Query, body: ListInstances) -> InstanceList:
        caller = require_caller(q.caller)
        everyone = body.all_users and caller.is_admin
        return views.instance_list(await self.repo.list_instances(None if everyone else caller.user_id))

    async def status(self, q: Query) -> InstanceState:
        rec = await instance_for(self.repo, q.caller, q.instance_id)
        return views.status_body(rec)

    async def qr(self, q: Query) -> QrCode | Reply:
        """200 ``{qrCode, expiresAt}`` (``expiresAt``: when the code stops working, ISO 8601
        UTC, ``null`` if unknown); 202 ``{message, status}`` otherwise (contract notes: clients
        rely on the 202): ``status`` is ``generating`` while a code is on its way, ``logged_out``
        after a logout or a linking timeout, when no code comes until the instance is
        reconnected (the message says so), so a polling client can stop."""
        rec = await instance_for(self.repo, q.caller, q.instance_id)
        if rec.status == InstanceStatus.QR and rec.qr_code:
            return views.qr_code(rec)
        if rec.status == InstanceStatus.CONNECTED:
            raise RequestError(409, "instance is already connected; no QR code is needed")
        stopped = rec.status == InstanceStatus.LOGGED_OUT and rec.id not in self.running
        return Reply.success(views.qr_pending("logged_out" if stopped else "generating"), status=202)

    async def activity(self, q: Query, body: ActivityQuery) -> ActivityPage:
        rec = await instance_for(self.repo, q.caller, q.instance_id)
        logs, total = await self.repo.list_activity(
            rec.id,
            actions=aliased(body.actions),
            start=views.parse_time(body.start_date, "startDate"),
            end=views.parse_time(body.end_date, "endDate"),
            skip=body.skip,
            limit=body.limit,
        )
        return views.activity_page(logs, total, body.limit, body.skip)

    async def events(self, q: Query, body: EventsQuery) -> EventsPage:
        rec = await instance_for(self.repo, q.caller, q.instance_id)
        since = views.parse_time(body.since, "since")
        if since is not None:
            # Timestamps are shown with millisecond precision: "since" = after that millisecond,
            # so passing back latestTimestamp never returns the same event again (and no event
            # of the instance shares its millisecond with another: FeedClock.stamped). With
            # "since" the page holds the oldest events after it (newest first), so a client
            # polling with the last latestTimestamp pages through a burst larger than "limit"
            # without a gap.
            since += timedelta(microseconds=999 - since.microsecond % 1000)
        recs, more = await self.repo.recent_events(
            rec.id, since=since, types=aliased(body.types), limit=body.limit
        )
        # With nothing new after "since", latestTimestamp stays "since" (at millisecond
        # precision): a client that always passes back the last latestTimestamp keeps its place
        # instead of starting over from the newest events.
        return views.events_page(recs, recs[0].occurred_at if recs else since, more)

    async def contacts(self, q: Query, body: ContactsQuery) -> DbContactsPage:
        rec = await instance_for(self.repo, q.caller, q.instance_id)
        recs, total = await self.repo.list_contacts(
            rec.id, search=body.search, only_groups=body.only_groups, skip=body.skip, limit=body.limit
        )
        return views.contacts_page(recs, total, body.limit, body.skip)

    async def chat_messages(self, q: Query, body: ChatMessagesQuery) -> ChatMessagesPage:
        rec = await instance_for(self.repo, q.caller, q.instance_id)
        jid = views.to_jid(body.chat_id, "chatId")
        recs, total = await self.repo.chat_messages(
            rec.id,
            jid,
            start=views.parse_time(body.start_date, "startDate"),
            end=views.parse_time(body.end_date, "endDate"),
            skip=body.skip,
            limit=body.limit,
        )
        return views.messages_page(recs, total, body.limit, body.skip)
