"""Translation of neonize/whatsmeow event protobufs into our normalised engine events.

Pure functions over ``neonize.proto.Neonize_pb2`` messages (NEONIZE.md, "Events"), so they are
unit-tested with real protobufs built offline. Units: ``MessageEv.Info.Timestamp`` is Unix
**milliseconds** (our ``Message.timestamp`` is seconds); ``ReceiptEv.Timestamp`` is seconds.
JIDs are rendered without device part (``<user>@<server>``); a LID address (``@lid``) is replaced
by its phone-number alternative when whatsmeow gives one (``SenderAlt``/``RecipientAlt``).
"""

from __future__ import annotations

from typing import Any

from neonize.proto.Neonize_pb2 import JID, ConnectFailureReason, PairStatus
from neonize.proto.Neonize_pb2 import LoggedOut as LoggedOutProto
from neonize.proto.Neonize_pb2 import Message as MessageProto
from neonize.proto.Neonize_pb2 import Receipt as ReceiptProto
from neonize.utils.message import extract_text

from wa_session_worker.engines.base import (
    DeviceRecord,
    LoggedOut,
    MediaInfo,
    Message,
    Paired,
    Receipt,
)

# (field of the E2E Message, our message type), checked in this order.
MEDIA_FIELDS: tuple[tuple[str, str], ...] = (
    ("imageMessage", "image"),
    ("videoMessage", "video"),
    ("audioMessage", "audio"),
    ("documentMessage", "document"),
    ("stickerMessage", "sticker"),
)
RECEIPT_STATUS = {
    ReceiptProto.DELIVERED: "delivered",
    ReceiptProto.READ: "read",
    ReceiptProto.PLAYED: "played",
}


def jid_str(jid: JID) -> str:
    """``user@server`` of a JID (device and agent dropped); ``""`` for an empty JID."""
    if not jid.User:
        return jid.Server
    return f"{jid.User}@{jid.Server}"


def device_jid_fields(jid: JID) -> dict[str, Any]:
    """The parts of a device JID a device record stores (to rebuild it for resuming)."""
    return {"user": jid.User, "device": jid.Device, "server": jid.Server}


def jid_from_fields(data: dict[str, Any]) -> JID:
    """Rebuild the device JID stored by :func:`device_jid_fields`."""
    return JID(
        User=str(data["user"]),
        Device=int(data.get("device", 0)),
        Server=str(data.get("server", "s.whatsapp.net")),
        RawAgent=0,
        Integrator=0,
        IsEmpty=False,
    )


def _prefer_phone(jid: JID, alt: JID) -> str:
    if jid.Server == "lid" and alt.User:
        return jid_str(alt)
    return jid_str(jid)


def _media_of(message: MessageProto) -> tuple[str, Any] | None:
    for field, kind in MEDIA_FIELDS:
        if message.HasField(field):
            return kind, getattr(message, field)
    if message.HasField("documentWithCaptionMessage"):
        inner = message.documentWithCaptionMessage.message
        if inner.HasField("documentMessage"):
            return "document", inner.documentMessage
    return None


def media_of(message: MessageProto) -> Any | None:
    """The media sub-message (ImageMessage...) of an E2E message, for downloading; else None."""
    found = _media_of(message)
    return found[1] if found else None


def translate_message(instance_id: str, ev: Any, data: bytes | None = None) -> Message | None:
    """``MessageEv`` → :class:`Message` (``None`` for protocol messages with no content, e.g.
    key distribution or revocations). ``data``: the downloaded media, if any."""
    info = ev.Info
    source = info.MessageSource
    message = ev.Message
    media_found = _media_of(message)
    if media_found is not None:
        kind, media_msg = media_found
        fields = {f.name for f, _ in media_msg.ListFields()}
        media = MediaInfo(
            mimetype=media_msg.mimetype if "mimetype" in fields else "application/octet-stream",
            size=int(media_msg.fileLength) if "fileLength" in fields else (len(data) if data else 0),
            filename=media_msg.fileName if "fileName" in fields else None,
            caption=media_msg.caption if "caption" in fields else None,
            data=data,
        )
        text = media.caption or ""
    else:
        text = extract_text(message)
        if not text and not (message.HasField("conversation") or message.HasField("extendedTextMessage")):
            return None
        kind, media = "conversation", None
    chat = _prefer_phone(source.Chat, source.SenderAlt if not source.IsGroup else JID())
    sender = _prefer_phone(source.Sender, source.SenderAlt)
    return Message(
        instance_id=instance_id,
        message_id=info.ID,
        chat_jid=chat,
        sender_jid=sender,
        from_me=source.IsFromMe,
        timestamp=int(info.Timestamp) // 1000,
        type=kind,
        text=text,
        push_name=info.Pushname or None,
        is_group=source.IsGroup,
        media=media,
    )


def translate_receipt(instance_id: str, ev: ReceiptProto) -> Receipt | None:
    """``ReceiptEv`` → :class:`Receipt` for delivered/read/played; ``None`` for the others
    (sender, retry, *_self, server errors...)."""
    status = RECEIPT_STATUS.get(ev.Type)
    if status is None:
        return None
    source = ev.MessageSource
    chat = _prefer_phone(source.Chat, source.SenderAlt if not source.IsGroup else JID())
    return Receipt(instance_id, chat, tuple(ev.MessageIDs), status, int(ev.Timestamp))


def translate_pair_status(instance_id: str, ev: PairStatus, store: str) -> Paired | None:
    """``PairStatusEv`` SUCCESS → :class:`Paired` whose device record names the device in the
    shared store (``store``: ``postgres`` or ``sqlite``); ``None`` for ERROR."""
    if ev.Status != PairStatus.SUCCESS:
        return None
    device = DeviceRecord(
        jid=jid_str(ev.ID),
        data={"engine": "neonize", "store": store, **device_jid_fields(ev.ID)},
    )
    return Paired(instance_id, device, push_name=ev.BusinessName or None, platform=ev.Platform or None)


def translate_logged_out(instance_id: str, ev: LoggedOutProto) -> LoggedOut:
    """``LoggedOutEv`` → :class:`LoggedOut` with the lower-case ``ConnectFailureReason`` name
    (``logged_out``, ``main_device_gone``...); ``logged_out`` when unset."""
    reason = "logged_out"
    if ev.HasField("Reason"):
        reason = ConnectFailureReason.Name(ev.Reason).lower()
    return LoggedOut(instance_id, reason=reason)
