"""Canonical encoding and hashing of transactions and blocks (encoding version 1).

The README's "Block format" section is the specification; the known-answer
tests in tests/chain/test_encoding.py pin it. Never change what version 1
produces: add version 2 beside it and dispatch on the ``v`` field.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import orjson

ENCODING_VERSION = 1
GENESIS_PREVIOUS_HASH = "0" * 64


class EncodingError(ValueError):
    """A value cannot be encoded canonically (a float, a naive time, a bad type)."""


_SCALARS = (str, int, bool, type(None))


def _check(value: Any, path: str = "$") -> None:
    # Floats have no single canonical text form; payloads carry decimals as strings.
    if type(value) in _SCALARS:
        return
    if isinstance(value, float):
        raise EncodingError(f"{path}: floats are not allowed; encode the number as a string")
    if isinstance(value, (str, int)):  # subclasses, e.g. TextChoices members
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if type(key) is not str:
                raise EncodingError(f"{path}: object keys must be strings")
            if type(item) not in _SCALARS:
                _check(item, f"{path}.{key}")
        return
    raise EncodingError(f"{path}: {type(value).__name__} cannot be encoded")


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8 (not ASCII-escaped)."""
    _check(value)
    return _encode_checked(value)


def _dumps(value: Any) -> bytes:
    """The reference encoder: what version 1 is defined by."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


_SORT_KEYS = orjson.OPT_SORT_KEYS


def _encode_checked(value: Any) -> bytes:
    """``_dumps`` for a value ``_check`` accepts, through orjson where it can.

    For such values (str keys; str, int, bool, None, lists and dicts, and
    their plain subclasses such as TextChoices members or OrderedDict) orjson
    writes the same bytes as the reference encoder:
    compact separators, keys sorted by code point (UTF-8 byte order is code
    point order), non-ASCII as UTF-8, the same escapes for control characters.
    tests/chain/test_verification_speedups.py checks that property. What orjson
    refuses (integers beyond 64 bits, nesting deeper than 254, lone surrogates)
    goes to the reference encoder, so the result (or the error) is unchanged.
    """
    try:
        return orjson.dumps(value, option=_SORT_KEYS)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return _dumps(value)


_sha256 = hashlib.sha256


def sha256_hex(data: bytes) -> str:
    return _sha256(data).hexdigest()


def format_time(moment: datetime) -> str:
    """ISO 8601 in UTC with microseconds: 2026-01-02T03:04:05.000006Z."""
    if moment.tzinfo is None:
        raise EncodingError("times must be timezone-aware")
    # isoformat is several times faster than strftime; in UTC it ends in +00:00.
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


# The fields a block header and a signed transaction are made of, in one place
# for the models, the rows read for verification and the envelopes in flight.
HEADER_FIELDS = (
    "height",
    "previous_hash",
    "created_at",
    "proposer",
    "merkle_root",
    "transaction_count",
)
ENVELOPE_FIELDS = ("kind", "author", "payload", "timestamp", "signature")


def fields_of(source: Any, names: tuple[str, ...]) -> dict:
    return {name: getattr(source, name) for name in names}


# --- Transactions -----------------------------------------------------------------


def transaction_body(*, kind: str, author: str, payload: dict, timestamp: datetime) -> dict:
    """What the author signs."""
    return {
        "v": ENCODING_VERSION,
        "kind": kind,
        "author": author,
        "payload": payload,
        "timestamp": format_time(timestamp),
    }


def transaction_signing_bytes(
    *, kind: str, author: str, payload: dict, timestamp: datetime
) -> bytes:
    return canonical_json(
        transaction_body(kind=kind, author=author, payload=payload, timestamp=timestamp)
    )


def transaction_hash(
    *, kind: str, author: str, payload: dict, timestamp: datetime, signature: str
) -> str:
    """SHA-256 over the signed body plus the signature (base64)."""
    # transaction_body plus the signature, built in one go (same keys, same order).
    body = {
        "v": ENCODING_VERSION,
        "kind": kind,
        "author": author,
        "payload": payload,
        "timestamp": format_time(timestamp),
        "signature": signature,
    }
    _check(body)
    return _sha256(_encode_checked(body)).hexdigest()


def transaction_hash_checked(
    kind: str, author: str, payload: Any, timestamp: datetime, signature: str
) -> str:
    """``transaction_hash`` for values already known to pass ``_check``: ``kind``,
    ``author`` and ``signature`` are ``str`` and ``payload`` holds only JSON
    values without floats (what the verifier reads from the database)."""
    return _sha256(
        _encode_checked(
            {
                "v": ENCODING_VERSION,
                "kind": kind,
                "author": author,
                "payload": payload,
                "timestamp": format_time(timestamp),
                "signature": signature,
            }
        )
    ).hexdigest()


# --- Blocks ----------------------------------------------------------------------


def block_header(
    *,
    height: int,
    previous_hash: str,
    created_at: datetime,
    proposer: str,
    merkle_root: str,
    transaction_count: int,
) -> dict:
    """What the hub signs."""
    return {
        "v": ENCODING_VERSION,
        "height": height,
        "previous_hash": previous_hash,
        "created_at": format_time(created_at),
        "proposer": proposer,
        "merkle_root": merkle_root,
        "transaction_count": transaction_count,
    }


def block_signing_bytes(**header_fields: Any) -> bytes:
    return canonical_json(block_header(**header_fields))


def block_hash(*, hub_signature: str, **header_fields: Any) -> str:
    """SHA-256 over every other field of the block: the header and the hub's signature."""
    return sha256_hex(
        canonical_json({**block_header(**header_fields), "hub_signature": hub_signature})
    )


def block_hash_of(
    height: int,
    previous_hash: str,
    created_at: datetime,
    proposer: str,
    merkle_root: str,
    transaction_count: int,
    hub_signature: str,
) -> str:
    """``block_hash`` with positional fields, for the verifier's hot loop."""
    body = {
        "v": ENCODING_VERSION,
        "height": height,
        "previous_hash": previous_hash,
        "created_at": format_time(created_at),
        "proposer": proposer,
        "merkle_root": merkle_root,
        "transaction_count": transaction_count,
        "hub_signature": hub_signature,
    }
    if (
        type(height) is not int
        or type(transaction_count) is not int
        or type(previous_hash) is not str
        or type(proposer) is not str
        or type(merkle_root) is not str
        or type(hub_signature) is not str
    ):
        _check(body)  # anything but the column types: validate as canonical_json does
    return _sha256(_encode_checked(body)).hexdigest()
