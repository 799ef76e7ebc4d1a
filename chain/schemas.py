"""Payload schemas per transaction kind, and which signer may author which kind.

A payload never holds PHI: pseudonyms, identifiers, category names and SHA-256
pointers only. Schemas forbid unknown fields so that nothing else slips in.
"""

from __future__ import annotations

from jsonschema import Draft202012Validator

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

# Which kind of signer may author which kind of transaction.
AUTHOR_KINDS: dict[tuple[str, str], frozenset[str]] = {
    ("hub", "hub"): frozenset({TransactionKind.IDENTITY}),
    ("tenant", "hospital"): frozenset(
        {
            TransactionKind.IDENTITY,
            TransactionKind.DATA,
            TransactionKind.ANCHOR,
            TransactionKind.REQUEST,
        }
    ),
    ("tenant", "research"): frozenset({TransactionKind.REQUEST}),
    ("patient", "hospital"): frozenset({TransactionKind.ACCESS}),
}


def payload_errors(kind: str, payload: object) -> list[str]:
    """Human-readable schema violations; empty when the payload is valid."""
    validator = _VALIDATORS.get(kind)
    if validator is None:
        return [f"unknown transaction kind {kind!r}"]
    if validator.is_valid(payload):  # the common case, several times faster
        return []
    errors = sorted(validator.iter_errors(payload), key=lambda error: list(error.path))
    return [
        f"{'/'.join(str(part) for part in error.path) or 'payload'}: {error.message}"
        for error in errors[:5]
    ]
