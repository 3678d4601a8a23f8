"""Contacts of a live neonize session: whatsmeow's contact store (in the shared device store, so
every worker sees the same), joined groups, and number checks. Only while connected (hazard 2:
``contact.get_all_contacts()`` aborts the process without a live Go client)."""

from __future__ import annotations

from wa_session_worker.engines.base import WaContact
from wa_session_worker.engines.neonize_engine.addresses import phone_digits, recipient_jid
from wa_session_worker.engines.neonize_engine.session import NeonizeSession, call
from wa_session_worker.engines.neonize_engine.translate import jid_str


async def fetch_contacts(session: NeonizeSession) -> list[WaContact]:
    """Contacts from the device store plus joined groups."""
    contacts = await call(session, "contacts", lambda c: c.contact.get_all_contacts())
    groups = await call(session, "contacts", lambda c: c.get_joined_groups())
    result = [
        WaContact(
            jid=jid_str(c.JID),
            name=c.Info.FullName or c.Info.FirstName or None,
            push_name=c.Info.PushName or None,
        )
        for c in contacts
    ]
    result.extend(WaContact(jid=jid_str(g.JID), name=g.GroupName.Name or None, is_group=True) for g in groups)
    return result


async def check_number(session: NeonizeSession, phone: str) -> str | None:
    digits = phone_digits(phone)
    answers = await call(session, "check_number", lambda c: c.is_on_whatsapp(f"+{digits}"))
    for answer in answers:
        if answer.IsIn:
            return jid_str(answer.JID)
    return None


async def save_contact_name(session: NeonizeSession, jid: str, name: str) -> None:
    """Store ``name`` for ``jid`` in whatsmeow's contact store; local only, nothing is sent to
    WhatsApp."""
    contact = recipient_jid(jid)
    first = name.split(maxsplit=1)[0] if name.strip() else name
    await call(session, "add_contact", lambda c: c.contact.put_contact_name(contact, name, first))
