"""Turn queries into stable cache keys, and results into bytes and back, with msgspec."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

from uno.cqrs.exceptions import CacheSerializationFailed, UncacheableQuery

__all__ = ["decode_result", "encode_result", "query_cache_key", "query_type_name"]

# Python-mode dumps keep sets as sets, which "sorted" order sorts; what msgspec cannot
# encode falls back to pydantic's JSON form.
_KEY_ENCODER = msgspec.json.Encoder(order="sorted", enc_hook=to_jsonable_python)
_CODEC_VERSION = "1"
"""Part of every key: after a change of encoding, old entries are missed, not misread."""


def query_type_name(query: object) -> str:
    """Return the query's type name as keys carry it: ``module.QualifiedName``."""
    cls = type(query)
    return f"{cls.__module__}.{cls.__qualname__}"


def query_cache_key(query: object) -> str:
    """Return the cache key of ``query``: its type name and a digest of its canonical JSON.

    Equal queries give equal keys in every process: fields are encoded in sorted
    order (dict keys and sets too), so neither field order nor hash seeds matter.

    Raises:
        UncacheableQuery: the query is not a pydantic model or a msgspec struct, or a field
            does not encode to JSON.
    """
    if not isinstance(query, BaseModel | msgspec.Struct):
        raise UncacheableQuery(query, "it is neither a pydantic model nor a msgspec struct")
    try:
        fields = query.model_dump() if isinstance(query, BaseModel) else query
        canonical = _KEY_ENCODER.encode(fields)
    except (TypeError, ValueError, msgspec.EncodeError) as exc:
        raise UncacheableQuery(query, f"{type(exc).__name__}: {exc}") from exc
    digest = hashlib.sha256(canonical).hexdigest()
    return f"{query_type_name(query)}:{_CODEC_VERSION}:{digest}"


def _encode_hook(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise NotImplementedError(f"cannot encode objects of type {type(value).__qualname__}")


def _decode_hook(kind: type, value: Any) -> Any:
    if issubclass(kind, BaseModel):
        return kind.model_validate(value)
    raise NotImplementedError(f"cannot decode objects of type {kind!r}")


_VALUE_ENCODER = msgspec.msgpack.Encoder(enc_hook=_encode_hook)


def encode_result(query_type: str, value: object) -> bytes:
    """Encode a query result as MessagePack (pydantic models as their JSON-mode dump).

    Raises:
        CacheSerializationFailed: msgspec cannot encode the value.
    """
    try:
        return _VALUE_ENCODER.encode(value)
    except (TypeError, ValueError, NotImplementedError, msgspec.EncodeError) as exc:
        raise CacheSerializationFailed(query_type, f"{type(exc).__name__}: {exc}") from exc


def decode_result(query_type: str, payload: bytes, result_type: Any) -> Any:
    """Decode a result as ``result_type`` (``Any``: plain builtins).

    Raises:
        CacheSerializationFailed: the payload does not decode as ``result_type``.
    """
    try:
        return msgspec.msgpack.decode(payload, type=result_type, dec_hook=_decode_hook)
    except (msgspec.DecodeError, ValidationError, NotImplementedError, TypeError) as exc:
        raise CacheSerializationFailed(query_type, f"{type(exc).__name__}: {exc}") from exc
