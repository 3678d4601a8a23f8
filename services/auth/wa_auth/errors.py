"""The refusal the auth service raises: :class:`AuthError` (HTTP status + message for the client).

Routes turn it into ``{"error": "<message>"}`` (``wa_auth.api.errors``); with ``field`` set the
body also has ``"details": [{"field", "message"}]`` and the message is prefixed with the field,
like a request-validation error; with ``retry_after_s`` set (429) a ``Retry-After`` header.
Messages never contain a password, a hash or a key.
"""

from __future__ import annotations


class AuthError(Exception):
    """A refusal with an HTTP status (400, 401, 403, 404, 409, 429) and a message for the client."""

    def __init__(
        self, status: int, message: str, *, retry_after_s: int | None = None, field: str | None = None
    ):
        super().__init__(f"{field}: {message}" if field else message)
        self.status = status
        self.message = f"{field}: {message}" if field else message
        self.field = field
        self.detail = message
        self.retry_after_s = retry_after_s
