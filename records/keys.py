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
    encryption_private: bytes = field(repr=False, default=b"")


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
        encryption_private=encryption_private,
    )


# --- The private keys under the patient's password ------------------------------


class PasswordRequired(DecryptionError):
    """The patient's private keys open only with their password."""


class WrongPassword(DecryptionError):
    """The password given does not open the patient's private keys."""


SIGNING_PURPOSE = "patient-signing-key"
ENCRYPTION_PURPOSE = "patient-encryption-key"


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


def _password_aad(key_id: str, parameters: dict, purpose: str) -> bytes:
    return canonical_json({"purpose": purpose, "key_id": key_id, "kdf": parameters})


def password_seal(raw: bytes, *, password: str, key_id: str, purpose: str = SIGNING_PURPOSE) -> str:
    """A raw private key sealed under Argon2id(password): JSON with the KDF
    parameters, so they can be raised later without breaking older wraps.
    ``purpose`` is bound in as AAD: a signing-key wrap never opens as an
    encryption key."""
    parameters = _argon2_parameters()
    salt, nonce = os.urandom(16), os.urandom(12)
    key = _password_key(password, salt, parameters)
    sealed = AESGCM(key).encrypt(nonce, raw, _password_aad(key_id, parameters, purpose))
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


def password_open(
    sealed: str, *, password: str, key_id: str, purpose: str = SIGNING_PURPOSE
) -> bytes:
    try:
        data = json.loads(sealed)
        parameters = {"t": data["t"], "m": data["m"], "p": data["p"]}
        key = _password_key(password, unb64(data["salt"]), parameters)
        return AESGCM(key).decrypt(
            unb64(data["nonce"]), unb64(data["ct"]), _password_aad(key_id, parameters, purpose)
        )
    except (InvalidTag, ValueError, KeyError, TypeError):
        raise WrongPassword("the password does not open the patient's private key") from None


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


def patient_keys_to_password(
    patient, signing: Ed25519PrivateKey, password: str, encryption: bytes | None = None
) -> None:
    """Seal the patient's private keys under ``password`` and drop the master-key
    copies (the caller saves the row, see :data:`PASSWORD_FIELDS`).

    ``encryption`` is the raw X25519 key when the caller has it (a new or linked
    patient, a password change); otherwise a master-key copy still on the row
    is moved under the password. Without either the account keeps no
    encryption key: it is not needed to read (the hospital serves reads after
    the policy check) and comes back with the next link."""
    patient.signing_key_password_wrap = password_seal(
        keyring.private_key_raw(signing), password=password, key_id=patient.key_id
    )
    patient.sealed_signing_key = ""
    if encryption is None and patient.sealed_encryption_key:
        encryption = patient_encryption_key(patient)
    patient.encryption_key_password_wrap = (
        password_seal(
            encryption, password=password, key_id=patient.key_id, purpose=ENCRYPTION_PURPOSE
        )
        if encryption
        else ""
    )
    patient.sealed_encryption_key = ""


PASSWORD_FIELDS = [
    "signing_key_password_wrap",
    "sealed_signing_key",
    "encryption_key_password_wrap",
    "sealed_encryption_key",
]


def patient_encryption_key(patient, password: str | None = None) -> bytes:
    """The raw X25519 private key, which opens the data keys wrapped for this
    patient (``RecordSection.patient_wrap``). Once the patient has a password it
    opens only with that password; before, with the master key."""
    if patient.encryption_key_password_wrap:
        if not password:
            raise PasswordRequired("enter your password to open your key")
        return password_open(
            patient.encryption_key_password_wrap,
            password=password,
            key_id=patient.key_id,
            purpose=ENCRYPTION_PURPOSE,
        )
    if not patient.sealed_encryption_key:
        raise PasswordRequired("this account holds no encryption key: link it again")
    return _open(
        patient.sealed_encryption_key,
        pseudonym=patient.pseudonym,
        label="encryption",
        version=patient.key_version,
    )
