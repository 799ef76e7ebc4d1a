"""Payload schemas per transaction kind, and which signer may author which kind.

A payload never holds PHI: pseudonyms, identifiers, category names and SHA-256
pointers only. Schemas forbid unknown fields so that nothing else slips in.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable

from jsonschema import Draft202012Validator
from jsonschema import _utils as jsonschema_utils

from chain.models import TransactionKind

HEX64 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
SLUG = {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,39}$"}
KEY_ID = {"type": "string", "pattern": "^ed25519:[0-9a-f]{32}$"}
PUBLIC_KEY = {"type": "string", "pattern": "^[A-Za-z0-9+/]{43}=$"}
PSEUDONYM = {"type": "string", "pattern": "^[A-Za-z0-9_-]{8,64}$"}
IDENTIFIER = {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"}
TIME = {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$"}
NAME_LIST = {
    "type": "array",
    "items": {"type": "string", "pattern": "^[a-z_]{1,32}$"},
    "uniqueItems": True,
}


def _object(properties: dict, required: list[str]) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


PAYLOAD_SCHEMAS: dict[str, dict] = {
    TransactionKind.IDENTITY: _object(
        {
            "action": {"enum": ["register", "rotate", "revoke", "link"]},
            "subject_type": {"enum": ["hub", "tenant", "patient", "practitioner"]},
            "subject": {"anyOf": [SLUG, PSEUDONYM]},
            "tenant": SLUG,
            "tenant_kind": {"enum": ["hub", "hospital", "research"]},
            "key_id": KEY_ID,
            "public_key": PUBLIC_KEY,
            "encryption_public_key": PUBLIC_KEY,
            # The subject's signature over (subject, key_id): proof it holds the key.
            "proof": {"type": "string", "minLength": 80, "maxLength": 100},
            "replaces": KEY_ID,
            # action "link": the subject's pseudonym now also covers this one
            # (the linking hospital's earlier pseudonym for the same person).
            "links": PSEUDONYM,
        },
        [
            "action",
            "subject_type",
            "subject",
            "tenant",
            "tenant_kind",
            "key_id",
            "public_key",
            "proof",
        ],
    ),
    TransactionKind.DATA: _object(
        {
            "patient": PSEUDONYM,
            "record": IDENTIFIER,
            "origin": SLUG,
            "categories": NAME_LIST,
            "levels": NAME_LIST,
            "ciphertexts": {"type": "object", "additionalProperties": HEX64},
            "author": PSEUDONYM,
            "amends": IDENTIFIER,
            "erased": {"type": "boolean"},
        },
        ["patient", "record", "origin", "categories", "levels", "ciphertexts", "author"],
    ),
    TransactionKind.ACCESS: _object(
        {
            "patient": PSEUDONYM,
            "grantee": _object(
                {"type": {"enum": ["practitioner", "tenant", "request"]}, "id": IDENTIFIER},
                ["type", "id"],
            ),
            "categories": NAME_LIST,
            "purpose": {"enum": ["treatment", "second_opinion", "research", "emergency"]},
            "expires_at": {"anyOf": [TIME, {"type": "null"}]},
            "reason_hash": HEX64,
        },
        ["patient", "grantee", "categories", "purpose", "expires_at"],
    ),
    TransactionKind.REQUEST: _object(
        {
            "request": IDENTIFIER,
            "organisation": SLUG,
            "status": {
                "enum": ["opened", "approved", "declined", "released", "closed", "withdrawn"]
            },
            "hospital": SLUG,
            "document_sha256": HEX64,
            "dataset_sha256": HEX64,
            "rows": {"type": "integer", "minimum": 0},
            "suppressed": {"type": "integer", "minimum": 0},
        },
        ["request", "organisation", "status"],
    ),
    TransactionKind.ANCHOR: _object(
        {
            "tenant": SLUG,
            "first_entry": {"type": "integer", "minimum": 1},
            "last_entry": {"type": "integer", "minimum": 1},
            "root": HEX64,
        },
        ["tenant", "first_entry", "last_entry", "root"],
    ),
}

_VALIDATORS = {kind: Draft202012Validator(schema) for kind, schema in PAYLOAD_SCHEMAS.items()}


# --- A fast accept check --------------------------------------------------------------
#
# jsonschema walks a schema for every payload, which costs more than the signature
# check. The schemas above use a handful of keywords, so each is compiled once into
# plain Python predicates with Draft 2020-12's semantics (integers may be floats with
# no fraction, booleans are not numbers, ``pattern`` is ``re.search``, ``enum`` and
# ``uniqueItems`` never confuse True with 1). The predicate only answers "valid?":
# a payload it refuses goes to jsonschema, which alone words the errors (and has the
# last word). A schema using any other keyword is not compiled: jsonschema decides.


class _Unsupported(Exception):
    pass


def _is_integer(value: object) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Number)


_TYPE_CHECKS = {
    "string": lambda value: isinstance(value, str),
    "object": lambda value: isinstance(value, dict),
    "array": lambda value: isinstance(value, list),
    "boolean": lambda value: isinstance(value, bool),
    "null": lambda value: value is None,
    "integer": _is_integer,
    "number": _is_number,
}


def _unique(items: list) -> bool:
    if all(type(item) is str for item in items):
        return len(set(items)) == len(items)
    return jsonschema_utils.uniq(items)  # mixed items: jsonschema's own comparison


def _compile(schema: object) -> Callable[[object], bool]:
    """A predicate equal to ``Draft202012Validator(schema).is_valid``; raises
    ``_Unsupported`` for a keyword it does not know."""
    if schema is True:
        return lambda value: True
    if schema is False:
        return lambda value: False
    if not isinstance(schema, dict):
        raise _Unsupported(repr(schema))
    unknown = set(schema) - {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "pattern",
        "enum",
        "anyOf",
        "minimum",
        "items",
        "uniqueItems",
        "minLength",
        "maxLength",
    }
    if unknown:
        raise _Unsupported(", ".join(sorted(unknown)))
    checks: list[Callable[[object], bool]] = []
    kind = schema.get("type")
    if kind is not None:
        if not isinstance(kind, str) or kind not in _TYPE_CHECKS:
            raise _Unsupported(f"type {kind!r}")
        checks.append(_TYPE_CHECKS[kind])
    if "enum" in schema:
        values = schema["enum"]
        if not all(type(value) is str for value in values):
            raise _Unsupported("enum of non-strings")
        allowed = frozenset(values)
        checks.append(lambda value: isinstance(value, str) and value in allowed)
    if "pattern" in schema:
        search = re.compile(schema["pattern"]).search
        checks.append(lambda value: not isinstance(value, str) or search(value) is not None)
    if "minLength" in schema:
        least = schema["minLength"]
        checks.append(lambda value: not isinstance(value, str) or len(value) >= least)
    if "maxLength" in schema:
        most = schema["maxLength"]
        checks.append(lambda value: not isinstance(value, str) or len(value) <= most)
    if "minimum" in schema:
        minimum = schema["minimum"]
        checks.append(lambda value: not _is_number(value) or not value < minimum)
    if "anyOf" in schema:
        options = [_compile(option) for option in schema["anyOf"]]
        checks.append(lambda value: any(option(value) for option in options))
    if "items" in schema:
        item_ok = _compile(schema["items"])
        checks.append(
            lambda value: not isinstance(value, list) or all(item_ok(item) for item in value)
        )
    if schema.get("uniqueItems") is True:
        checks.append(lambda value: not isinstance(value, list) or _unique(value))
    elif schema.get("uniqueItems", False) is not False:
        raise _Unsupported("uniqueItems")
    if {"properties", "required", "additionalProperties"} & set(schema):
        checks.append(_compile_object(schema))
    if len(checks) == 1:
        return checks[0]
    return lambda value: all(check(value) for check in checks)


def _compile_object(schema: dict) -> Callable[[object], bool]:
    properties = {name: _compile(sub) for name, sub in schema.get("properties", {}).items()}
    required = tuple(schema.get("required", ()))
    additional = schema.get("additionalProperties", True)
    closed = additional is False
    extra_ok = None if additional in (True, False) else _compile(additional)

    def check(value: object) -> bool:
        if not isinstance(value, dict):
            return True  # "type" says whether it must be an object
        for name in required:
            if name not in value:
                return False
        for name, item in value.items():
            rule = properties.get(name)
            if rule is not None:
                if not rule(item):
                    return False
            elif closed or (extra_ok is not None and not extra_ok(item)):
                return False
        return True

    return check


def _fast_checks() -> dict[str, Callable[[object], bool]]:
    compiled = {}
    for kind, schema in PAYLOAD_SCHEMAS.items():
        try:
            compiled[kind] = _compile(schema)
        except _Unsupported:
            continue  # jsonschema alone decides this kind
    return compiled


_FAST_CHECKS = _fast_checks()

# Which kind of signer may author which kind of transaction.
AUTHOR_KINDS: dict[tuple[str, str], frozenset[str]] = {
    ("hub", "hub"): frozenset({TransactionKind.IDENTITY}),
    ("tenant", "hospital"): frozenset(
        {
            TransactionKind.IDENTITY,
            TransactionKind.DATA,
            TransactionKind.ANCHOR,
            TransactionKind.REQUEST,
            TransactionKind.ACCESS,
        }
    ),
    ("tenant", "research"): frozenset({TransactionKind.REQUEST}),
    # Patients sign their consent; hospitals sign only declared emergencies
    # (checked in chain.services._check_access).
    ("patient", "hospital"): frozenset({TransactionKind.ACCESS}),
}


def payload_errors(kind: str, payload: object) -> list[str]:
    """Human-readable schema violations; empty when the payload is valid."""
    validator = _VALIDATORS.get(kind)
    if validator is None:
        return [f"unknown transaction kind {kind!r}"]
    fast = _FAST_CHECKS.get(kind)
    if fast is not None and fast(payload):  # the common case, many times faster
        return []
    if validator.is_valid(payload):
        return []
    errors = sorted(validator.iter_errors(payload), key=lambda error: list(error.path))
    return [
        f"{'/'.join(str(part) for part in error.path) or 'payload'}: {error.message}"
        for error in errors[:5]
    ]
