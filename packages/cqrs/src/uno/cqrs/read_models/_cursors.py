"""Opaque keyset cursors: the last row's sort values, bound to their query and signed.

A cursor is ``base64url(payload) "." base64url(HMAC-SHA256(secret, payload))``;
the payload holds a digest of the query (read model, specification, order) and
the sort values and id of the page's last document. A changed byte, a cursor
of another query, or one signed with another secret is an ``InvalidCursor``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

import msgspec

from uno.cqrs.exceptions import InvalidCursor

__all__ = ["CursorCodec"]

_MAC_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorCodec:
    """Sign and check the cursors of one repository."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    @staticmethod
    def query_digest(query: bytes) -> str:
        """Return the short digest of a query's canonical form that cursors carry."""
        return hashlib.sha256(query).hexdigest()[:24]

    def encode(self, query: bytes, values: list[Any], last_id: object) -> str:
        """Return the cursor that continues ``query`` after ``(values, last_id)``."""
        payload = msgspec.json.encode([self.query_digest(query), values, last_id])
        mac = hmac.new(self._secret, payload, hashlib.sha256).digest()[:_MAC_BYTES]
        return f"{_b64(payload)}.{_b64(mac)}"

    def decode(self, cursor: object, query: bytes, keys: int) -> tuple[list[Any], Any]:
        """Return ``(values, last_id)`` of a cursor of ``query``; raise ``InvalidCursor``."""
        if not isinstance(cursor, str) or cursor.count(".") != 1 or len(cursor) > 1 << 20:
            raise InvalidCursor(
                "the cursor is not one this repository made: pass next_cursor of a page "
                "unchanged, or None for the first page"
            )
        head, _, tail = cursor.partition(".")
        try:
            payload, mac = _unb64(head), _unb64(tail)
        except (binascii.Error, ValueError) as exc:
            raise InvalidCursor(
                "the cursor is malformed (not base64): pass next_cursor of a page unchanged"
            ) from exc
        want = hmac.new(self._secret, payload, hashlib.sha256).digest()[:_MAC_BYTES]
        if not hmac.compare_digest(mac, want):
            raise InvalidCursor(
                "the cursor's signature does not match: it was changed, or made by a "
                "repository with another cursor_secret; start again from the first page"
            )
        digest, values, last_id = msgspec.json.decode(payload)
        if digest != self.query_digest(query) or len(values) != keys:
            raise InvalidCursor(
                "the cursor belongs to another query (another filter or order): use it only "
                "with the query that returned it"
            )
        return list(values), last_id
