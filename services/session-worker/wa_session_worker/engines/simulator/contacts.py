"""A simulated account's contacts: the phone's contact book (given at pairing, carried in the
device record) plus every chat its session has seen."""

from __future__ import annotations

from wa_common.schemas.sim import SimContact
from wa_session_worker.engines.base import DeviceRecord, WaContact
from wa_session_worker.engines.simulator.session import SimSession, device_record


def contact_list(session: SimSession) -> list[WaContact]:
    """The phone's contact book plus every chat seen by ``session``."""
    contacts = {c.jid: WaContact(jid=c.jid, name=c.name) for c in session.contacts}
    for jid, push_name in session.chats.items():
        known = contacts.get(jid)
        contacts[jid] = WaContact(jid=jid, name=known.name if known else None, push_name=push_name)
    return list(contacts.values())


def save_contact(session: SimSession, jid: str, name: str | None) -> DeviceRecord | None:
    """Save the contact in the phone's contact book (renaming it when ``name`` is given); returns
    the device record carrying the updated book, or ``None`` when nothing changed."""
    book = {c.jid: c for c in session.contacts}
    known = book.get(jid)
    if known is not None and (name is None or known.name == name):
        return None
    book[jid] = SimContact(jid=jid, name=name)
    session.contacts = list(book.values())
    return device_record(session)
