"""Envelope encryption for medical records (DESIGN.md, "Keys and encryption").

Each section of a record (one per sensitivity level) and each attachment is
sealed with AES-256-GCM under a fresh 256-bit data key. The associated data
binds the record id, the section and the patient pseudonym, so a ciphertext
cut from one record and pasted into another (or into another section of the
same record) fails its integrity check instead of decrypting as the wrong
thing.

The data key itself is never stored in the clear. It is wrapped:

* for the origin hospital, under a key-encryption key (KEK) from a
  :class:`KeyProvider`; the wrap remembers the KEK version, so rotation can
  re-wrap every data key under a new version without touching the (large)
  ciphertexts, after which the old version can be retired;
* for the patient, with HPKE (RFC 9180, base mode, X25519 / HKDF-SHA256 /
  AES-256-GCM) to the patient's X25519 public key, so the patient can read
  their own record without trusting any hospital's KEK.

Nothing here logs, formats or returns key material or plaintext in an error:
every failure to decrypt becomes a :class:`DecryptionError` whose message names
only the record and section, and the underlying exception is suppressed so it
cannot leak through a chained traceback either.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from chain.encoding import b64, canonical_json, unb64
from chain.keys import derive_key

#: Version of every byte layout and associated-data shape defined in this module.
#: Never change what version 1 produces: add version 2 beside it.
FORMAT_VERSION = 1

NONCE_BYTES = 12
KEY_BYTES = 32
TAG_BYTES = 16

KEK_PURPOSE = "record-kek"
DEFAULT_KEY_PROVIDER = "records.crypto.MasterKeyProvider"

# HPKE blob: one format byte, then HPKE's enc (32 bytes for X25519), then the
# AES-256-GCM ciphertext of the data key with its tag.
_HPKE_SUITE = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.AES_256_GCM)
_HPKE_FORMAT = bytes([FORMAT_VERSION])
_HPKE_ENC_BYTES = 32
_HPKE_BLOB_BYTES = len(_HPKE_FORMAT) + _HPKE_ENC_BYTES + KEY_BYTES + TAG_BYTES


# --- Errors ---------------------------------------------------------------------


class RecordCryptoError(Exception):
    """Base class, so callers can catch every failure of this module at once."""


class DecryptionError(RecordCryptoError):
    """A ciphertext, nonce, tag, key or associated data did not verify.

    The message names the record and section only; it never contains plaintext
    or key material. No plaintext is ever returned alongside it: AES-GCM
    verifies the tag before releasing anything.
    """


class KeyVersionUnavailable(RecordCryptoError):
    """The key provider no longer (or not yet) serves this KEK version."""


# --- Associated data ------------------------------------------------------------


def _require_text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


@dataclass(frozen=True)
class SectionContext:
    """Where a ciphertext belongs; bound into every encryption as associated data.

    A ciphertext only decrypts under exactly the context it was sealed with,
    which stops a server (or an attacker with write access to the store) from
    swapping sections between records, levels or patients.
    """

    record_id: str
    section: str
    patient_pseudonym: str

    def __post_init__(self) -> None:
        _require_text("record_id", self.record_id)
        _require_text("section", self.section)
        _require_text("patient_pseudonym", self.patient_pseudonym)

    def as_dict(self) -> dict[str, Any]:
        return {
            "record_id": self.record_id,
            "section": self.section,
            "patient_pseudonym": self.patient_pseudonym,
        }

    def aad(self) -> bytes:
        """Canonical JSON with a version and a purpose label (domain separation).

        Canonical JSON, not string concatenation, so no two distinct contexts
        can ever produce the same bytes.
        """
        return canonical_json({"v": FORMAT_VERSION, "purpose": "record-section", **self.as_dict()})

    def describe(self) -> str:
        """For error messages: identifiers only, never content."""
        return f"section {self.section!r} of record {self.record_id}"


# --- Sections -------------------------------------------------------------------


@dataclass(frozen=True)
class SealedSection:
    """The output of :func:`seal_section`.

    ``ciphertext`` includes the 16-byte GCM tag at its end. ``data_key`` must be
    wrapped (for the tenant and the patient) and then discarded; it is kept out
    of ``repr`` so it cannot end up in a log line or a traceback by accident.
    """

    ciphertext: bytes = field(repr=False)
    nonce: bytes
    data_key: bytes = field(repr=False)


def seal_section(plaintext: bytes, context: SectionContext) -> SealedSection:
    """Encrypt one section under a fresh data key.

    A fresh key per section means the random 96-bit nonce is used exactly once
    per key, so GCM's nonce-reuse catastrophe cannot happen however many
    sections are written.
    """
    data_key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(data_key).encrypt(nonce, bytes(plaintext), context.aad())
    return SealedSection(ciphertext=ciphertext, nonce=nonce, data_key=data_key)


def open_section(
    sealed_ciphertext: bytes, nonce: bytes, data_key: bytes, context: SectionContext
) -> bytes:
    """Decrypt one section, or raise :class:`DecryptionError` and return nothing."""
    failure = DecryptionError(f"{context.describe()} failed its integrity check")
    if len(nonce) != NONCE_BYTES or len(data_key) != KEY_BYTES:
        raise failure
    if len(sealed_ciphertext) < TAG_BYTES:
        raise failure
    try:
        return AESGCM(data_key).decrypt(nonce, sealed_ciphertext, context.aad())
    except (InvalidTag, ValueError, TypeError):
        raise failure from None


# --- Key-encryption keys --------------------------------------------------------


@runtime_checkable
class KeyProvider(Protocol):
    """Where tenants' key-encryption keys come from.

    The default derives them from ``MEDPORTAL_MASTER_KEY``; the interface leaves
    room for Vault or a cloud KMS (whose "wrap" would happen remotely; such a
    provider would then implement this by returning a data key it unwrapped).
    """

    def current_version(self, tenant: str) -> int:
        """The version new wraps use."""
        ...

    def key_encryption_key(self, tenant: str, version: int) -> bytes:
        """32 bytes; raises :class:`KeyVersionUnavailable` for a retired version."""
        ...


def _setting_version(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ImproperlyConfigured(f"{name} must hold positive integers, not {value!r}")
    return value


class MasterKeyProvider:
    """KEKs derived with HKDF from the master key, per tenant and version.

    Settings (read on every call, so an operator's change takes effect without
    a restart of anything that caches the provider, and tests can override):

    * ``MEDPORTAL_KEK_VERSION`` (int, default 1): the version new wraps use.
    * ``MEDPORTAL_KEK_RETIRED_VERSIONS`` (list of int, default []): versions
      that must no longer be used; asking for one raises
      :class:`KeyVersionUnavailable`. Retire a version only after
      ``rotate_keys`` has re-wrapped everything under a newer one.

    Versions above the current one are refused too, so a typo in a rotation
    command cannot wrap data under a version that is not deployed yet.
    """

    def _current(self) -> int:
        return _setting_version(
            "MEDPORTAL_KEK_VERSION", getattr(settings, "MEDPORTAL_KEK_VERSION", 1)
        )

    def _retired(self) -> frozenset[int]:
        raw = getattr(settings, "MEDPORTAL_KEK_RETIRED_VERSIONS", [])
        if isinstance(raw, (str, bytes)):
            raise ImproperlyConfigured("MEDPORTAL_KEK_RETIRED_VERSIONS must be a list of integers")
        return frozenset(_setting_version("MEDPORTAL_KEK_RETIRED_VERSIONS", v) for v in raw)

    def current_version(self, tenant: str) -> int:
        _require_text("tenant", tenant)
        current = self._current()
        if current in self._retired():
            raise ImproperlyConfigured(
                f"MEDPORTAL_KEK_VERSION {current} is listed in MEDPORTAL_KEK_RETIRED_VERSIONS"
            )
        return current

    def key_encryption_key(self, tenant: str, version: int) -> bytes:
        _require_text("tenant", tenant)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise KeyVersionUnavailable(f"key version {version!r} is not valid")
        if version in self._retired():
            raise KeyVersionUnavailable(
                f"key version {version} of tenant {tenant} is retired; "
                "re-wrap with rotate_keys before retiring a version"
            )
        if version > self._current():
            raise KeyVersionUnavailable(
                f"key version {version} of tenant {tenant} is newer than the current version"
            )
        return derive_key(purpose=KEK_PURPOSE, owner=tenant, version=version)


def get_key_provider() -> KeyProvider:
    """The provider named by ``MEDPORTAL_KEY_PROVIDER`` (a dotted path to a class
    or a zero-argument factory); default :class:`MasterKeyProvider`."""
    path = getattr(settings, "MEDPORTAL_KEY_PROVIDER", DEFAULT_KEY_PROVIDER)
    try:
        factory = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"MEDPORTAL_KEY_PROVIDER {path!r} cannot be imported") from exc
    provider = factory()
    if not isinstance(provider, KeyProvider):
        raise ImproperlyConfigured(f"MEDPORTAL_KEY_PROVIDER {path!r} is not a KeyProvider")
    return provider


# --- Wrapping for a tenant ------------------------------------------------------


@dataclass(frozen=True)
class WrappedKey:
    """A data key wrapped under one tenant's KEK of one version."""

    version: int
    nonce: bytes
    ciphertext: bytes = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for a model field."""
        return {
            "v": FORMAT_VERSION,
            "kek_version": self.version,
            "nonce": b64(self.nonce),
            "ciphertext": b64(self.ciphertext),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WrappedKey:
        if data.get("v") != FORMAT_VERSION:
            raise ValueError("unknown wrapped-key format")
        return cls(
            version=int(data["kek_version"]),
            nonce=unb64(data["nonce"]),
            ciphertext=unb64(data["ciphertext"]),
        )


def _wrap_aad(*, tenant: str, version: int, context: SectionContext) -> bytes:
    # Binding tenant and version stops a wrap being replayed under another
    # tenant's KEK or relabelled with another version.
    return canonical_json(
        {
            "v": FORMAT_VERSION,
            "purpose": "record-data-key-wrap",
            "tenant": tenant,
            "kek_version": version,
            "context": context.as_dict(),
        }
    )


def _check_data_key(data_key: bytes) -> bytes:
    if not isinstance(data_key, bytes) or len(data_key) != KEY_BYTES:
        raise ValueError("a data key is exactly 32 bytes")
    return data_key


def _wrap_at(
    data_key: bytes, *, tenant: str, context: SectionContext, version: int, provider: KeyProvider
) -> WrappedKey:
    kek = provider.key_encryption_key(tenant, version)
    nonce = os.urandom(NONCE_BYTES)
    aad = _wrap_aad(tenant=tenant, version=version, context=context)
    return WrappedKey(
        version=version, nonce=nonce, ciphertext=AESGCM(kek).encrypt(nonce, data_key, aad)
    )


def wrap_for_tenant(
    data_key: bytes,
    *,
    tenant: str,
    context: SectionContext,
    provider: KeyProvider | None = None,
    version: int | None = None,
) -> WrappedKey:
    """Wrap a data key under the tenant's current KEK version (or ``version``,
    for rotation)."""
    _check_data_key(data_key)
    _require_text("tenant", tenant)
    provider = provider or get_key_provider()
    version = version or provider.current_version(tenant)
    return _wrap_at(data_key, tenant=tenant, context=context, version=version, provider=provider)


def unwrap_for_tenant(
    wrapped: WrappedKey,
    *,
    tenant: str,
    context: SectionContext,
    provider: KeyProvider | None = None,
) -> bytes:
    """The data key, or :class:`DecryptionError` (wrong tenant, context or bytes).

    :class:`KeyVersionUnavailable` propagates unchanged: it is an operational
    problem (a version retired too early), not a forgery, and deserves a
    different alarm.
    """
    _require_text("tenant", tenant)
    provider = provider or get_key_provider()
    kek = provider.key_encryption_key(tenant, wrapped.version)
    failure = DecryptionError(
        f"the data key of {context.describe()} does not unwrap for tenant {tenant} "
        f"(key version {wrapped.version})"
    )
    if len(wrapped.nonce) != NONCE_BYTES:
        raise failure
    aad = _wrap_aad(tenant=tenant, version=wrapped.version, context=context)
    try:
        data_key = AESGCM(kek).decrypt(wrapped.nonce, wrapped.ciphertext, aad)
    except (InvalidTag, ValueError, TypeError):
        raise failure from None
    if len(data_key) != KEY_BYTES:
        raise failure
    return data_key


def rewrap_for_tenant(
    wrapped: WrappedKey,
    *,
    tenant: str,
    context: SectionContext,
    to_version: int,
    provider: KeyProvider | None = None,
) -> WrappedKey:
    """Re-wrap a data key under another KEK version (rotation), without touching
    the section ciphertext. A wrap already at ``to_version`` is returned as is,
    so an interrupted ``rotate_keys`` can simply be run again."""
    provider = provider or get_key_provider()
    if wrapped.version == to_version:
        # Still prove it unwraps, so rotation never blesses a broken wrap.
        unwrap_for_tenant(wrapped, tenant=tenant, context=context, provider=provider)
        return wrapped
    data_key = unwrap_for_tenant(wrapped, tenant=tenant, context=context, provider=provider)
    return _wrap_at(data_key, tenant=tenant, context=context, version=to_version, provider=provider)


# --- Wrapping for a patient (HPKE) ----------------------------------------------


def x25519_generate() -> tuple[bytes, bytes]:
    """A new patient key pair as raw 32-byte (private, public)."""
    private = X25519PrivateKey.generate()
    private_raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public_raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return private_raw, public_raw


def wrap_for_recipient(
    data_key: bytes, *, recipient_public: bytes, context: SectionContext
) -> bytes:
    """HPKE base mode to the recipient's X25519 key; ``info`` is the context's AAD,
    so the blob opens only for this record, section and patient pseudonym."""
    _check_data_key(data_key)
    public = X25519PublicKey.from_public_bytes(recipient_public)
    return _HPKE_FORMAT + _HPKE_SUITE.encrypt(data_key, public, info=context.aad())


def unwrap_for_recipient(
    blob: bytes, *, recipient_private: bytes, context: SectionContext
) -> bytes:
    """The data key, or :class:`DecryptionError` (wrong key, context or bytes)."""
    failure = DecryptionError(
        f"the patient's copy of the data key of {context.describe()} does not open"
    )
    if len(blob) != _HPKE_BLOB_BYTES or blob[:1] != _HPKE_FORMAT:
        raise failure
    try:
        private = X25519PrivateKey.from_private_bytes(recipient_private)
        data_key = _HPKE_SUITE.decrypt(blob[1:], private, info=context.aad())
    except (InvalidTag, ValueError, TypeError):
        raise failure from None
    if len(data_key) != KEY_BYTES:
        raise failure
    return data_key
