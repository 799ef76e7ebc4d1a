"""Signing keys: Ed25519 per tenant and for the hub, private halves encrypted at rest.

A private key is stored encrypted with AES-256-GCM under a key-encryption key
derived (HKDF-SHA256) from ``MEDPORTAL_MASTER_KEY``, the purpose, the owner and a
key version; it is decrypted only in memory to sign, and never logged.
"""

from __future__ import annotations

import base64
import hashlib
import os

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from chain.encoding import b64, unb64

KEY_VERSION = 1


class KeyUnavailable(RuntimeError):
    """The master key is missing or wrong for a stored private key."""


def master_key() -> bytes:
    raw = settings.MEDPORTAL_MASTER_KEY
    if not raw:
        raise ImproperlyConfigured("MEDPORTAL_MASTER_KEY is not set (see README, Configuration).")
    try:
        key = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except ValueError:
        raise ImproperlyConfigured(
            "MEDPORTAL_MASTER_KEY must be base64 (32 random bytes)."
        ) from None
    if len(key) < 32:
        raise ImproperlyConfigured("MEDPORTAL_MASTER_KEY must hold at least 32 random bytes.")
    return key


def derive_key(*, purpose: str, owner: str, version: int = KEY_VERSION) -> bytes:
    """A 256-bit key for one purpose and owner, from the master key (HKDF-SHA256)."""
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=f"medportal/{purpose}/v{version}/{owner}".encode(),
    ).derive(master_key())


def key_id_for(public_key_raw: bytes) -> str:
    """A short, stable name for a public key."""
    return "ed25519:" + hashlib.sha256(public_key_raw).hexdigest()[:32]


def public_key_raw(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def private_key_raw(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def seal_private_key(*, private_key: Ed25519PrivateKey, owner: str, key_id: str) -> str:
    """Encrypt a private key for storage: base64(nonce || ciphertext || tag)."""
    nonce = os.urandom(12)
    kek = derive_key(purpose="signing-key", owner=owner)
    sealed = AESGCM(kek).encrypt(nonce, private_key_raw(private_key), key_id.encode())
    return b64(nonce + sealed)


def open_private_key(*, sealed: str, owner: str, key_id: str, version: int) -> Ed25519PrivateKey:
    data = unb64(sealed)
    kek = derive_key(purpose="signing-key", owner=owner, version=version)
    try:
        raw = AESGCM(kek).decrypt(data[:12], data[12:], key_id.encode())
    except Exception:  # noqa: BLE001  (InvalidTag and friends: the key is wrong)
        raise KeyUnavailable(f"cannot decrypt the signing key {key_id} of {owner}") from None
    return Ed25519PrivateKey.from_private_bytes(raw)


def sign(private_key: Ed25519PrivateKey, message: bytes) -> str:
    return b64(private_key.sign(message))


def verify(public_key_b64: str, signature_b64: str, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(unb64(public_key_b64)).verify(
            unb64(signature_b64), message
        )
    except (InvalidSignature, ValueError):
        return False
    return True
