"""Keys of research: the organisation's dataset key, the share holders' keys,
the per-request secrets, and the hub's store for documents and datasets.

Every key here is derived from the master key (HKDF, ``chain.keys.derive_key``),
like the hospitals' key-encryption keys: one deployment holds them all, and a
key-management service can take the master key's place (README, "Keys").
"""

from __future__ import annotations

from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

from chain.encoding import canonical_json
from chain.keys import derive_key
from records.store import FileSystemStore, get_store

HUB_HOLDER = "hub"

_SUITE = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.AES_256_GCM)


class SealedDataError(Exception):
    """An encrypted dataset or share does not open (wrong key, context or bytes)."""


def _x25519(purpose: str, owner: str) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(derive_key(purpose=purpose, owner=owner))


def organisation_key(slug: str) -> X25519PrivateKey:
    """The research organisation's key: datasets are encrypted to its public half."""
    return _x25519("research-dataset", slug)


def holder_key(slug: str) -> X25519PrivateKey:
    """A share holder's key (a hospital, or the hub): shares are encrypted to it."""
    return _x25519("research-shares", slug)


def pseudonym_key() -> bytes:
    """The key of per-request pseudonyms and date shifts. One for the deployment,
    so a patient linked at two hospitals gets the same pseudonym and shift in
    both hospitals' parts of one request; the request id makes them differ
    between requests."""
    return derive_key(purpose="research-pseudonyms", owner="hub")


def _info(**context: str) -> bytes:
    return canonical_json({"purpose": "medportal-research", **context})


def seal_for(public: X25519PublicKey, plaintext: bytes, **context: str) -> bytes:
    """HPKE (RFC 9180, base mode) to ``public``; ``context`` is bound in as info."""
    return _SUITE.encrypt(plaintext, public, info=_info(**context))


def open_with(private: X25519PrivateKey, sealed: bytes, **context: str) -> bytes:
    try:
        return _SUITE.decrypt(bytes(sealed), private, info=_info(**context))
    except (InvalidTag, ValueError, TypeError):
        raise SealedDataError("the sealed data does not open with this key and context") from None


def research_store() -> FileSystemStore:
    """The hub's content-addressed store of ethics documents and encrypted datasets."""
    return FileSystemStore(Path(get_store().root) / "research")
