"""Contacts: the live session's list, adding and importing contacts, saving one in the store.

Commands of the instance's shard (the live list needs the session that runs here). Listing the
stored contacts is a query (:mod:`wa_session_worker.service.queries`).
"""

from __future__ import annotations

from wa_common.bus.router import RequestError
from wa_common.schemas import Command
from wa_common.schemas.contacts import AddContactResult, DbContact, ImportResult, WhatsappContacts
from wa_common.schemas.session import AddContact, SaveContact
from wa_session_worker.service import guard, views
from wa_session_worker.service.access import instance_for
from wa_session_worker.service.recorder import fit
from wa_session_worker.service.sessions import SessionCommands


def _number(jid: str) -> str:
    return jid.split("@", 1)[0]


class Contacts(SessionCommands):
    """The contact commands of an instance (module docstring)."""

    async def fetch(self, cmd: Command) -> WhatsappContacts:
        rec = await instance_for(self.repo, cmd.caller, cmd.instance_id)
        self.sessions.require(rec.id)
        return views.whatsapp_contacts(await self.engine.fetch_contacts(rec.id))

    async def add(self, cmd: Command, body: AddContact) -> AddContactResult:
        rec = await instance_for(self.repo, cmd.caller, cmd.instance_id)
        phone = _number(views.to_jid(body.phone, groups=False, lids=False))
        self.sessions.require(rec.id)
        jid = await self.engine.check_number(rec.id, phone)
        if jid is None:
            details = [{"field": "phone", "message": "not on WhatsApp"}]
            raise RequestError(400, f"{phone} is not on WhatsApp", details)
        number = _number(jid)
        # Into the account's contact book too, so GET .../contacts (the live session's list)
        # shows the name; an engine keeping the book in the device record hands it back.
        device = await self.engine.add_contact(rec.id, jid, body.name)
        if device is not None and device.jid == rec.device_jid:
            await self.repo.update_instance(rec.id, device_data=dict(device.data))
        contact = await self.repo.upsert_contact(rec.id, jid, at=self.clock(), number=number, name=body.name)
        return views.contact_added(jid, number, contact.name)

    async def import_all(self, cmd: Command) -> ImportResult:
        rec = await instance_for(self.repo, cmd.caller, cmd.instance_id)
        self.sessions.require(rec.id)
        contacts = await self.engine.fetch_contacts(rec.id)
        for c in contacts:
            await self.repo.upsert_contact(
                rec.id,
                c.jid,
                at=self.clock(),
                number=_number(c.jid),
                name=fit(c.name, guard.MAX_CONTACT_NAME),
                push_name=fit(c.push_name, guard.MAX_CONTACT_NAME),
                is_group=c.is_group,
            )
        await self.recorder.activity(rec.id, "contacts_imported", {"count": len(contacts)})
        return views.imported(len(contacts))

    async def save(self, cmd: Command, body: SaveContact) -> DbContact:
        rec = await instance_for(self.repo, cmd.caller, cmd.instance_id)
        if body.is_group:
            jid = views.to_group_jid(body.number, "number")
        else:
            jid = views.to_jid(body.number, "number")
        contact = await self.repo.upsert_contact(
            rec.id,
            jid,
            at=self.clock(),
            number=_number(jid),
            name=body.name,
            push_name=body.push_name,
            is_group=body.is_group,
            profile_picture=body.profile_picture,
            about=body.about,
        )
        return views.contact_body(contact)
