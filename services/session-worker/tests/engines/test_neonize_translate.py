"""Translation of real neonize event protobufs (built offline, NEONIZE.md "Testing offline")."""

from __future__ import annotations

from neonize.proto.Neonize_pb2 import (
    ConnectFailureReason,
    LoggedOut,
    MessageInfo,
    MessageSource,
    PairStatus,
)
from neonize.proto.Neonize_pb2 import Message as MessageEv
from neonize.proto.Neonize_pb2 import Receipt as ReceiptEv
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import (
    DocumentMessage,
    ExtendedTextMessage,
    ImageMessage,
    Message,
    ProtocolMessage,
)
from neonize.utils.jid import build_jid

from wa_session_worker.engines.neonize_engine.translate import (
    jid_from_fields,
    media_of,
    translate_logged_out,
    translate_message,
    translate_pair_status,
    translate_receipt,
)

ALICE = "15550001111"
BOB = "15550002222"


def message_ev(message: Message, *, chat: str = BOB, sender: str = BOB, **source: object) -> MessageEv:
    server = "g.us" if source.get("IsGroup") else "s.whatsapp.net"
    return MessageEv(
        Info=MessageInfo(
            ID="3EB0ABC",
            Pushname="Bob",
            Timestamp=1_732_000_000_123,  # milliseconds
            MessageSource=MessageSource(Chat=build_jid(chat, server), Sender=build_jid(sender), **source),
        ),
        Message=message,
    )


def test_text_message() -> None:
    ev = message_ev(Message(conversation="hello"))
    ev = MessageEv.FromString(ev.SerializePartialToString())  # through the wire format, as from Go
    got = translate_message("inst", ev)
    assert got is not None
    assert (got.message_id, got.chat_jid, got.sender_jid, got.from_me, got.is_group) == (
        "3EB0ABC",
        f"{BOB}@s.whatsapp.net",
        f"{BOB}@s.whatsapp.net",
        False,
        False,
    )
    assert (got.type, got.text, got.push_name, got.timestamp, got.media) == (
        "conversation",
        "hello",
        "Bob",
        1_732_000_000,
        None,
    )
    extended = translate_message(
        "inst", message_ev(Message(extendedTextMessage=ExtendedTextMessage(text="link")))
    )
    assert extended is not None and extended.text == "link" and extended.type == "conversation"


def test_own_message_from_another_device() -> None:
    got = translate_message("inst", message_ev(Message(conversation="x"), sender=ALICE, IsFromMe=True))
    assert got is not None and got.from_me and got.chat_jid == f"{BOB}@s.whatsapp.net"


def test_group_message() -> None:
    ev = message_ev(Message(conversation="hi all"), chat="120363000000000001", IsGroup=True)
    got = translate_message("inst", ev)
    assert got is not None
    assert got.is_group and got.chat_jid == "120363000000000001@g.us"
    assert got.sender_jid == f"{BOB}@s.whatsapp.net"


def test_lid_addresses_are_replaced_by_phone_numbers() -> None:
    ev = message_ev(Message(conversation="x"))
    ev.Info.MessageSource.Chat.CopyFrom(build_jid("987654321", "lid"))
    ev.Info.MessageSource.Sender.CopyFrom(build_jid("987654321", "lid"))
    ev.Info.MessageSource.SenderAlt.CopyFrom(build_jid(BOB))
    got = translate_message("inst", ev)
    assert got is not None and got.chat_jid == got.sender_jid == f"{BOB}@s.whatsapp.net"


def test_image_and_document_messages() -> None:
    image = Message(imageMessage=ImageMessage(mimetype="image/jpeg", caption="look", fileLength=2048))
    got = translate_message("inst", message_ev(image), data=b"jpeg")
    assert got is not None and got.type == "image" and got.text == "look"
    assert got.media is not None
    assert (got.media.mimetype, got.media.size, got.media.caption, got.media.data) == (
        "image/jpeg",
        2048,
        "look",
        b"jpeg",
    )
    assert media_of(image) is image.imageMessage or media_of(image) == image.imageMessage

    doc = Message(documentMessage=DocumentMessage(mimetype="application/pdf", fileName="a.pdf", fileLength=9))
    got_doc = translate_message("inst", message_ev(doc))
    assert got_doc is not None and got_doc.type == "document"
    assert got_doc.media is not None and got_doc.media.filename == "a.pdf" and got_doc.media.data is None


def test_protocol_messages_are_not_messages() -> None:
    protocol = Message(protocolMessage=ProtocolMessage(type=ProtocolMessage.REVOKE))
    assert translate_message("inst", message_ev(protocol)) is None


def test_receipt_types() -> None:
    def receipt(kind: int) -> ReceiptEv:
        return ReceiptEv(
            MessageSource=MessageSource(Chat=build_jid(BOB), Sender=build_jid(BOB)),
            MessageIDs=["A", "B"],
            Timestamp=1_732_000_000,  # seconds
            Type=kind,
        )

    delivered = translate_receipt("inst", receipt(ReceiptEv.DELIVERED))
    assert delivered is not None
    assert (delivered.chat_jid, delivered.message_ids, delivered.status, delivered.timestamp) == (
        f"{BOB}@s.whatsapp.net",
        ("A", "B"),
        "delivered",
        1_732_000_000,
    )
    read, played = (
        translate_receipt("inst", receipt(ReceiptEv.READ)),
        translate_receipt("inst", receipt(ReceiptEv.PLAYED)),
    )
    assert read is not None and read.status == "read"
    assert played is not None and played.status == "played"
    for other in (ReceiptEv.SENDER, ReceiptEv.RETRY, ReceiptEv.READ_SELF, ReceiptEv.PLAYED_SELF):
        assert translate_receipt("inst", receipt(other)) is None


def test_pair_status() -> None:
    device_jid = build_jid(ALICE)
    device_jid.Device = 7
    ok = PairStatus(ID=device_jid, Platform="android", BusinessName="", Status=PairStatus.SUCCESS)
    paired = translate_pair_status("inst", ok, "postgres")
    assert paired is not None
    assert paired.device.jid == f"{ALICE}@s.whatsapp.net" and paired.platform == "android"
    assert paired.device.data == {
        "engine": "neonize",
        "store": "postgres",
        "user": ALICE,
        "device": 7,
        "server": "s.whatsapp.net",
    }
    assert jid_from_fields(paired.device.data) == device_jid  # resumable from the record
    failed = PairStatus(Status=PairStatus.ERROR, Error="bad")
    assert translate_pair_status("inst", failed, "sqlite") is None


def test_logged_out() -> None:
    assert (
        translate_logged_out(
            "inst", LoggedOut(OnConnect=True, Reason=ConnectFailureReason.Value("MAIN_DEVICE_GONE"))
        ).reason
        == "main_device_gone"
    )
    assert translate_logged_out("inst", LoggedOut()).reason == "logged_out"
