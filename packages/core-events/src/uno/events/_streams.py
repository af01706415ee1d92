"""Stream ids: what a store accepts as the name of a stream."""

from __future__ import annotations

import re

from uno.events.exceptions import MAX_STREAM_ID_LENGTH, InvalidStreamId

__all__ = ["MAX_STREAM_ID_LENGTH", "validate_stream_id"]

# Control characters (C0, DEL, C1), lone surrogates, and the Unicode line and paragraph separators.
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029]")


def validate_stream_id(stream_id: object) -> str:
    """Return ``stream_id`` if a store may use it, else raise ``InvalidStreamId``.

    A stream id is 1-512 characters with no control characters, lone
    surrogates or line separators. Anything else, quotes and SQL fragments
    included, is stored verbatim: stores pass ids as query parameters.
    """
    if not isinstance(stream_id, str):
        raise InvalidStreamId(stream_id, f"expected a str, got {type(stream_id).__name__}")
    if not stream_id:
        raise InvalidStreamId(stream_id, "it is empty")
    if len(stream_id) > MAX_STREAM_ID_LENGTH:
        raise InvalidStreamId(stream_id, f"it is {len(stream_id):,} characters long")
    found = _FORBIDDEN.search(stream_id)
    if found:
        raise InvalidStreamId(
            stream_id, f"it holds the control character U+{ord(found.group()):04X}"
        )
    return stream_id
