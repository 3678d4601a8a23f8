"""Response bodies of sending and of the chat history (reference, "WhatsApp API"): built by the
session worker, declared and validated by the gateway (see ``wa_common.schemas.instances``)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from wa_common.schemas.wire import ApiModel, Pagination, UtcDateTime


class MessageId(ApiModel):
    """Answer of every send: the WhatsApp message id."""

    id: str = Field(examples=["3EB0C767D26A1D6F9A42"])


class ChatMessage(ApiModel):
    """A stored message of a chat."""

    id: str
    instance_id: str
    remote_jid: str
    from_me: bool
    message_type: str
    content: str | None = None
    message_id: str
    has_media: bool
    media_url: str | None = None
    caption: str | None = None
    mime_type: str | None = None
    file_name: str | None = None
    status: str
    metadata: dict[str, Any] | None = None
    created_at: UtcDateTime
    updated_at: UtcDateTime
    status_updated_at: UtcDateTime | None = None


class ChatMessagesPage(ApiModel):
    """``GET /api/instances/{instanceId}/chats/{chatId}/messages``, newest first."""

    messages: list[ChatMessage]
    pagination: Pagination
