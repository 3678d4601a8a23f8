"""Sending on a live neonize session: text, and media by kind (bytes only, never a URL: neonize
fetches URLs with no timeout, NEONIZE.md)."""

from __future__ import annotations

from typing import Any

from neonize.aioze.client import NewAClient

from wa_session_worker.engines.base import OutgoingMedia, SendResult
from wa_session_worker.engines.neonize_engine.addresses import recipient_jid
from wa_session_worker.engines.neonize_engine.session import NeonizeSession, call


async def send_text(session: NeonizeSession, to_jid: str, text: str) -> SendResult:
    response = await call(session, "send_text", lambda c: c.send_message(recipient_jid(to_jid), text))
    return _result(response)


async def send_media(session: NeonizeSession, to_jid: str, media: OutgoingMedia) -> SendResult:
    """Images, videos and audio go as such (neonize sets their mimetype); anything else as a
    document with ``filename`` and ``mimetype``."""
    to = recipient_jid(to_jid)
    kind = media.mimetype.split("/", 1)[0]

    async def send(client: NewAClient) -> Any:
        if kind == "image" and media.mimetype != "image/webp":
            return await client.send_image(to, media.data, caption=media.caption)
        if kind == "video":
            return await client.send_video(to, media.data, caption=media.caption)
        if kind == "audio":
            return await client.send_audio(to, media.data)
        return await client.send_document(
            to,
            media.data,
            caption=media.caption,
            filename=media.filename,
            mimetype=media.mimetype,
        )

    return _result(await call(session, "send_media", send))


def _result(response: Any) -> SendResult:
    """The ``SendResult`` of neonize's ``SendResponse`` (timestamp in seconds)."""
    return SendResult(response.ID, int(response.Timestamp))
