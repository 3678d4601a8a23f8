"""Real-format linking codes of the simulated network.

- QR strings follow whatsmeow's ``makeQRData``: ``<ref>,<noise pub>,<identity pub>,<adv secret>``
  (standard base64 of 32-byte values; ``ref`` is the server's opaque ``2@…`` reference), the form
  the reference API documents. neonize 0.5.2 wraps it in a ``wa.me`` link (NEONIZE.md); the
  simulator issues the bare form.
- Pairing codes follow whatsmeow's ``PairPhone``: 8 characters of the alphabet
  ``123456789ABCDEFGHJKLMNPQRSTVWXYZ`` shown as ``XXXX-XXXX``.
"""

from __future__ import annotations

import base64
import secrets

PAIRING_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTVWXYZ"


def _b64(n: int) -> str:
    return base64.b64encode(secrets.token_bytes(n)).decode()


def make_qr_code() -> str:
    """A fresh QR string ``2@<ref>,<noise>,<identity>,<adv>``."""
    ref = "2@" + base64.b64encode(secrets.token_bytes(66)).decode()
    return ",".join((ref, _b64(32), _b64(32), _b64(32)))


def make_pairing_code() -> str:
    """A fresh pairing code ``XXXX-XXXX``."""
    chars = "".join(secrets.choice(PAIRING_ALPHABET) for _ in range(8))
    return f"{chars[:4]}-{chars[4:]}"


def make_device_id() -> str:
    """An opaque id of one linked simulated device (revoked for good on logout)."""
    return secrets.token_hex(12)
