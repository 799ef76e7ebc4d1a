"""Patient keys, pseudonyms and blind indexes.

* **Patient keys** (Ed25519 to sign consent, X25519 to receive data keys) are
  held for the patient by the portal, sealed with AES-256-GCM under a key
  derived from ``MEDPORTAL_MASTER_KEY`` and the patient's pseudonym. Binding
  the pseudonym (not a hospital) lets the hub hand the sealed keys to a second
  hospital when the patient links their accounts there, without either
  hospital ever seeing the other's rows. README, "Patient keys", says why the
  keys are custodial and what a wallet would change.
* **Pseudonyms** are random (patients) or an HMAC of the user id under a
  hospital key (practitioners): never derived from a name.
* **Blind indexes** are HMAC-SHA256 under a per-hospital index key of a
  normalised value, for exact-match search over encrypted data.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import unicodedata
from dataclasses import dataclass, field

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings

from chain import keys as keyring
from chain.encoding import b64, canonical_json, unb64
from records.crypto import DecryptionError, x25519_generate

PATIENT_KEY_PURPOSE = "patient-key"
PATIENT_KEY_VERSION = 1
INDEX_PURPOSE = "blind-index"
PRACTITIONER_PURPOSE = "practitioner-pseudonym"


def pseudonym_new() -> str:
    """128 random bits, URL-safe: fits the chain's pseudonym pattern."""
    return secrets.token_urlsafe(16)


def practitioner_pseudonym(*, tenant_slug: str, user_id: int) -> str:
    key = keyring.derive_key(purpose=PRACTITIONER_PURPOSE, owner=tenant_slug)
    digest = hmac.new(key, f"user:{user_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode("ascii")


def _normalise(value: str) -> str:
    # NFKC + case folding + single spaces: "  Li  WEI" and "li wei" match.
    return " ".join(unicodedata.normalize("NFKC", value).casefold().split())


def blind_index(*, tenant_slug: str, kind: str, value: str) -> str:
    """HMAC of ``kind:normalised value`` under the hospital's index key.

    The kind is part of the message so a drug name can never match a record
    number. Exact match only, by design: no prefixes, no fuzzy search.
    """
    key = keyring.derive_key(purpose=INDEX_PURPOSE, owner=tenant_slug)
    message = f"{kind}:{_normalise(value)}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


# --- Patient key pairs ------------------------------------------------------------


def _seal_aad(pseudonym: str, label: str) -> bytes:
    return canonical_json({"purpose": PATIENT_KEY_PURPOSE, "pseudonym": pseudonym, "key": label})


def _seal(raw: bytes, *, pseudonym: str, label: str) -> str:
    key = keyring.derive_key(
        purpose=PATIENT_KEY_PURPOSE, owner=pseudonym, version=PATIENT_KEY_VERSION
    )
    nonce = os.urandom(12)
    return b64(nonce + AESGCM(key).encrypt(nonce, raw, _seal_aad(pseudonym, label)))


def _open(sealed: str, *, pseudonym: str, label: str, version: int) -> bytes:
    key = keyring.derive_key(purpose=PATIENT_KEY_PURPOSE, owner=pseudonym, version=version)
    try:
        blob = unb64(sealed)
        return AESGCM(key).decrypt(blob[:12], blob[12:], _seal_aad(pseudonym, label))
    except (InvalidTag, ValueError):
        raise DecryptionError(f"the {label} key of patient {pseudonym} does not open") from None


@dataclass(frozen=True)
class PatientKeys:
    """A patient's new key pairs: public halves in the clear, private halves sealed."""

    key_id: str
    signing_public_key: str
    sealed_signing_key: str
    encryption_public_key: str
    sealed_encryption_key: str
    key_version: int
    signing_private: Ed25519PrivateKey = field(repr=False)


def patient_keys_new(*, pseudonym: str) -> PatientKeys:
    signing = Ed25519PrivateKey.generate()
    signing_public = keyring.public_key_raw(signing)
    encryption_private, encryption_public = x25519_generate()
    return PatientKeys(
        key_id=keyring.key_id_for(signing_public),
        signing_public_key=b64(signing_public),
        sealed_signing_key=_seal(
            keyring.private_key_raw(signing), pseudonym=pseudonym, label="signing"
        ),
        encryption_public_key=b64(encryption_public),
        sealed_encryption_key=_seal(encryption_private, pseudonym=pseudonym, label="encryption"),
        key_version=PATIENT_KEY_VERSION,
        signing_private=signing,
    )


# --- The signing key under the patient's password ------------------------------


class PasswordRequired(DecryptionError):
    """The patient's signing key opens only with their password."""


class WrongPassword(DecryptionError):
    """The password given does not open the patient's signing key."""


def _argon2_parameters() -> dict:
    configured = getattr(settings, "MEDPORTAL_PATIENT_KEY_ARGON2", {})
    return {
        "t": int(configured.get("time_cost", 3)),
        "m": int(configured.get("memory_cost", 65536)),
        "p": int(configured.get("parallelism", 1)),
    }


def _password_key(password: str, salt: bytes, parameters: dict) -> bytes:
    return hash_secret_raw(
        password.encode(),
        salt,
        time_cost=parameters["t"],
        memory_cost=parameters["m"],
        parallelism=parameters["p"],
        hash_len=32,
        type=Type.ID,
    )


def _password_aad(key_id: str, parameters: dict) -> bytes:
    return canonical_json({"purpose": "patient-signing-key", "key_id": key_id, "kdf": parameters})


def password_seal(raw: bytes, *, password: str, key_id: str) -> str:
    """The raw signing key sealed under Argon2id(password): JSON with the KDF
    parameters, so they can be raised later without breaking older wraps."""
    parameters = _argon2_parameters()
    salt, nonce = os.urandom(16), os.urandom(12)
    key = _password_key(password, salt, parameters)
    sealed = AESGCM(key).encrypt(nonce, raw, _password_aad(key_id, parameters))
    return canonical_json(
        {
            "v": 1,
            "kdf": "argon2id",
            **parameters,
            "salt": b64(salt),
            "nonce": b64(nonce),
            "ct": b64(sealed),
        }
    ).decode()


def password_open(sealed: str, *, password: str, key_id: str) -> bytes:
    try:
        data = json.loads(sealed)
        parameters = {"t": data["t"], "m": data["m"], "p": data["p"]}
        key = _password_key(password, unb64(data["salt"]), parameters)
        return AESGCM(key).decrypt(
            unb64(data["nonce"]), unb64(data["ct"]), _password_aad(key_id, parameters)
        )
    except (InvalidTag, ValueError, KeyError, TypeError):
        raise WrongPassword("the password does not open the patient's signing key") from None


def patient_signing_key(patient, password: str | None = None) -> Ed25519PrivateKey:
    """The patient's signing key. Once the patient has a portal password it is
    sealed under that password only (the portal cannot sign for them); before,
    it is sealed under the master key."""
    if patient.signing_key_password_wrap:
        if not password:
            raise PasswordRequired("enter your password to sign")
        raw = password_open(
            patient.signing_key_password_wrap, password=password, key_id=patient.key_id
        )
    else:
        raw = _open(
            patient.sealed_signing_key,
            pseudonym=patient.pseudonym,
            label="signing",
            version=patient.key_version,
        )
    return Ed25519PrivateKey.from_private_bytes(raw)


def signing_key_to_password(patient, private: Ed25519PrivateKey, password: str) -> None:
    """Seal ``private`` under ``password`` on ``patient`` and drop the master-key
    copy (the caller saves the row)."""
    patient.signing_key_password_wrap = password_seal(
        keyring.private_key_raw(private), password=password, key_id=patient.key_id
    )
    patient.sealed_signing_key = ""


def patient_encryption_key(patient) -> bytes:
    """The raw X25519 private key, for unwrapping data keys sent to this patient."""
    return _open(
        patient.sealed_encryption_key,
        pseudonym=patient.pseudonym,
        label="encryption",
        version=patient.key_version,
    )
