"""Envelope encryption of record sections: round trips, tampering, isolation, rotation.

No database: these tests touch only settings and bytes.
"""

from __future__ import annotations

import dataclasses
import random
import string

import pytest
from django.core.exceptions import ImproperlyConfigured

from records.crypto import (
    DecryptionError,
    KeyProvider,
    KeyVersionUnavailable,
    MasterKeyProvider,
    SectionContext,
    WrappedKey,
    get_key_provider,
    open_section,
    rewrap_for_tenant,
    seal_section,
    unwrap_for_recipient,
    unwrap_for_tenant,
    wrap_for_recipient,
    wrap_for_tenant,
    x25519_generate,
)

CONTEXT = SectionContext(record_id="r-1", section="restricted", patient_pseudonym="p-7f3a")
PLAINTEXT = b"Diagnosis: F32.1 moderate depressive episode"


# --- Sections -------------------------------------------------------------------


def test_aad_is_canonical_json_with_version():
    assert CONTEXT.aad() == (
        b'{"patient_pseudonym":"p-7f3a","purpose":"record-section",'
        b'"record_id":"r-1","section":"restricted","v":1}'
    )


def test_context_rejects_empty_fields():
    with pytest.raises(ValueError):
        SectionContext(record_id="", section="s", patient_pseudonym="p")


def test_seal_and_open_round_trip():
    sealed = seal_section(PLAINTEXT, CONTEXT)
    assert len(sealed.nonce) == 12
    assert len(sealed.data_key) == 32
    assert len(sealed.ciphertext) == len(PLAINTEXT) + 16
    assert PLAINTEXT not in sealed.ciphertext
    assert open_section(sealed.ciphertext, sealed.nonce, sealed.data_key, CONTEXT) == PLAINTEXT


def test_empty_section_round_trip():
    sealed = seal_section(b"", CONTEXT)
    assert open_section(sealed.ciphertext, sealed.nonce, sealed.data_key, CONTEXT) == b""


def test_every_seal_uses_a_fresh_key_and_nonce():
    first, second = seal_section(PLAINTEXT, CONTEXT), seal_section(PLAINTEXT, CONTEXT)
    assert first.data_key != second.data_key
    assert first.nonce != second.nonce
    assert first.ciphertext != second.ciphertext


def test_sealed_section_repr_hides_key_and_ciphertext():
    sealed = seal_section(PLAINTEXT, CONTEXT)
    text = repr(sealed)
    assert sealed.data_key.hex() not in text
    assert repr(sealed.data_key) not in text
    assert "ciphertext" not in text


def test_wrong_data_key_fails_clearly():
    sealed = seal_section(PLAINTEXT, CONTEXT)
    other = seal_section(PLAINTEXT, CONTEXT).data_key
    with pytest.raises(DecryptionError, match=r"section 'restricted' of record r-1 failed"):
        open_section(sealed.ciphertext, sealed.nonce, other, CONTEXT)


@pytest.mark.parametrize("nonce_length", [0, 11, 13])
def test_bad_nonce_length_is_a_decryption_error(nonce_length):
    sealed = seal_section(PLAINTEXT, CONTEXT)
    with pytest.raises(DecryptionError):
        open_section(sealed.ciphertext, b"\0" * nonce_length, sealed.data_key, CONTEXT)


def test_truncated_ciphertext_is_a_decryption_error():
    sealed = seal_section(PLAINTEXT, CONTEXT)
    for cut in (0, 1, 15):
        with pytest.raises(DecryptionError):
            open_section(sealed.ciphertext[:cut], sealed.nonce, sealed.data_key, CONTEXT)


# --- One flipped bit, a thousand times -----------------------------------------

_FIELD_ALPHABET = string.ascii_lowercase + string.digits + "-"
# Upper case and spaces only, so no run of the plaintext can occur by chance in
# an error message built from (lower-case) identifiers and fixed words.
_PLAINTEXT_ALPHABET = string.ascii_uppercase + " "


def _random_field(rng: random.Random) -> str:
    return "".join(rng.choices(_FIELD_ALPHABET, k=rng.randint(1, 24)))


def _flip_bit(data: bytes, rng: random.Random, start: int = 0, end: int | None = None) -> bytes:
    end = len(data) if end is None else end
    index = rng.randrange(start, end)
    flipped = bytearray(data)
    flipped[index] ^= 1 << rng.randrange(8)
    return bytes(flipped)


def _change_one_field(context: SectionContext, rng: random.Random) -> SectionContext:
    name = rng.choice(["record_id", "section", "patient_pseudonym"])
    value = getattr(context, name)
    position = rng.randrange(len(value))
    replacement = rng.choice([c for c in _FIELD_ALPHABET if c != value[position]])
    changed = value[:position] + replacement + value[position + 1 :]
    return dataclasses.replace(context, **{name: changed})


def _assert_message_free_of(message: str, plaintext: str) -> None:
    window = 6
    for start in range(max(0, len(message) - window + 1)):
        assert message[start : start + window] not in plaintext


def test_one_flipped_bit_anywhere_never_decrypts():
    """1,000 sections, 250 each with one flipped bit in ciphertext body, nonce, tag,
    or one changed character of the associated data: all refused, nothing returned,
    and no fragment of the plaintext in the error."""
    rng = random.Random(20260101)
    targets = ["ciphertext", "nonce", "tag", "aad"]
    counts = dict.fromkeys(targets, 0)
    for case in range(1000):
        text = "".join(rng.choices(_PLAINTEXT_ALPHABET, k=rng.randint(0, 2048)))
        plaintext = text.encode()
        context = SectionContext(
            record_id=_random_field(rng),
            section=_random_field(rng),
            patient_pseudonym=_random_field(rng),
        )
        sealed = seal_section(plaintext, context)
        assert open_section(sealed.ciphertext, sealed.nonce, sealed.data_key, context) == plaintext

        target = targets[case % 4]
        if target == "ciphertext" and len(plaintext) == 0:
            target = "tag"  # An empty section has no body; its tag is all there is.
        ciphertext, nonce, open_context = sealed.ciphertext, sealed.nonce, context
        if target == "ciphertext":
            ciphertext = _flip_bit(ciphertext, rng, 0, len(ciphertext) - 16)
        elif target == "tag":
            ciphertext = _flip_bit(ciphertext, rng, len(ciphertext) - 16)
        elif target == "nonce":
            nonce = _flip_bit(nonce, rng)
        else:
            open_context = _change_one_field(context, rng)
            assert open_context.aad() != context.aad()
        counts[target] += 1

        result = None
        with pytest.raises(DecryptionError) as caught:
            result = open_section(ciphertext, nonce, sealed.data_key, open_context)
        assert result is None
        error = caught.value
        message = str(error)
        assert "failed its integrity check" in message
        assert open_context.record_id in message
        assert error.__cause__ is None and error.__suppress_context__
        _assert_message_free_of(message, text)
        _assert_message_free_of(repr(error), text)
        assert sealed.data_key.hex() not in message
    assert all(count >= 240 for count in counts.values()), counts


# --- Tenant wraps ---------------------------------------------------------------


def test_tenant_wrap_round_trip(settings):
    settings.MEDPORTAL_KEK_VERSION = 1
    sealed = seal_section(PLAINTEXT, CONTEXT)
    wrapped = wrap_for_tenant(sealed.data_key, tenant="alpha", context=CONTEXT)
    assert wrapped.version == 1
    assert sealed.data_key not in wrapped.ciphertext
    data_key = unwrap_for_tenant(wrapped, tenant="alpha", context=CONTEXT)
    assert open_section(sealed.ciphertext, sealed.nonce, data_key, CONTEXT) == PLAINTEXT


def test_wrapped_key_dict_round_trip():
    wrapped = wrap_for_tenant(b"k" * 32, tenant="alpha", context=CONTEXT)
    restored = WrappedKey.from_dict(wrapped.to_dict())
    assert restored == wrapped
    assert unwrap_for_tenant(restored, tenant="alpha", context=CONTEXT) == b"k" * 32


def test_wrap_refuses_a_short_data_key():
    with pytest.raises(ValueError):
        wrap_for_tenant(b"short", tenant="alpha", context=CONTEXT)


def test_beta_cannot_unwrap_alphas_data_key():
    sealed = seal_section(PLAINTEXT, CONTEXT)
    wrapped = wrap_for_tenant(sealed.data_key, tenant="alpha", context=CONTEXT)
    result = None
    with pytest.raises(DecryptionError, match="does not unwrap for tenant beta") as caught:
        result = unwrap_for_tenant(wrapped, tenant="beta", context=CONTEXT)
    assert result is None
    assert sealed.data_key.hex() not in str(caught.value)


def test_tenant_wrap_is_bound_to_the_section_context():
    wrapped = wrap_for_tenant(b"k" * 32, tenant="alpha", context=CONTEXT)
    other = dataclasses.replace(CONTEXT, section="general")
    with pytest.raises(DecryptionError):
        unwrap_for_tenant(wrapped, tenant="alpha", context=other)


def test_tenant_wrap_version_label_cannot_be_changed(settings):
    settings.MEDPORTAL_KEK_VERSION = 2
    wrapped = wrap_for_tenant(b"k" * 32, tenant="alpha", context=CONTEXT)
    relabelled = dataclasses.replace(wrapped, version=1)
    with pytest.raises(DecryptionError):
        unwrap_for_tenant(relabelled, tenant="alpha", context=CONTEXT)


def test_tampered_tenant_wrap_fails():
    wrapped = wrap_for_tenant(b"k" * 32, tenant="alpha", context=CONTEXT)
    for field_name in ("nonce", "ciphertext"):
        value = bytearray(getattr(wrapped, field_name))
        value[0] ^= 0x80
        tampered = dataclasses.replace(wrapped, **{field_name: bytes(value)})
        with pytest.raises(DecryptionError):
            unwrap_for_tenant(tampered, tenant="alpha", context=CONTEXT)


def test_rotation_then_retiring_the_old_version(settings):
    settings.MEDPORTAL_KEK_VERSION = 1
    settings.MEDPORTAL_KEK_RETIRED_VERSIONS = []
    sealed = seal_section(PLAINTEXT, CONTEXT)
    old = wrap_for_tenant(sealed.data_key, tenant="alpha", context=CONTEXT)
    assert old.version == 1

    # Operator: bump the version, run rotate_keys (rewrap everything) ...
    settings.MEDPORTAL_KEK_VERSION = 2
    new = rewrap_for_tenant(old, tenant="alpha", context=CONTEXT, to_version=2)
    assert new.version == 2
    assert new.ciphertext != old.ciphertext
    # ... running it again is harmless ...
    assert rewrap_for_tenant(new, tenant="alpha", context=CONTEXT, to_version=2) is new

    # ... then retire version 1.
    settings.MEDPORTAL_KEK_RETIRED_VERSIONS = [1]
    data_key = unwrap_for_tenant(new, tenant="alpha", context=CONTEXT)
    assert open_section(sealed.ciphertext, sealed.nonce, data_key, CONTEXT) == PLAINTEXT
    with pytest.raises(KeyVersionUnavailable, match="retired"):
        unwrap_for_tenant(old, tenant="alpha", context=CONTEXT)
    # New wraps use version 2.
    assert wrap_for_tenant(data_key, tenant="alpha", context=CONTEXT).version == 2


def test_rewrap_to_a_version_not_yet_current_is_refused(settings):
    settings.MEDPORTAL_KEK_VERSION = 1
    wrapped = wrap_for_tenant(b"k" * 32, tenant="alpha", context=CONTEXT)
    with pytest.raises(KeyVersionUnavailable, match="newer"):
        rewrap_for_tenant(wrapped, tenant="alpha", context=CONTEXT, to_version=2)


def test_versions_give_different_keks(settings):
    settings.MEDPORTAL_KEK_VERSION = 2
    provider = MasterKeyProvider()
    assert provider.key_encryption_key("alpha", 1) != provider.key_encryption_key("alpha", 2)
    assert provider.key_encryption_key("alpha", 1) != provider.key_encryption_key("beta", 1)
    assert len(provider.key_encryption_key("alpha", 2)) == 32


def test_retiring_the_current_version_is_a_configuration_error(settings):
    settings.MEDPORTAL_KEK_VERSION = 2
    settings.MEDPORTAL_KEK_RETIRED_VERSIONS = [2]
    with pytest.raises(ImproperlyConfigured):
        MasterKeyProvider().current_version("alpha")


@pytest.mark.parametrize("bad", [0, -1, "2", True])
def test_bad_kek_version_setting_is_refused(settings, bad):
    settings.MEDPORTAL_KEK_VERSION = bad
    with pytest.raises(ImproperlyConfigured):
        MasterKeyProvider().current_version("alpha")


class _FixedProvider:
    """A stand-in for a KMS-backed provider."""

    def current_version(self, tenant: str) -> int:
        return 7

    def key_encryption_key(self, tenant: str, version: int) -> bytes:
        if version != 7:
            raise KeyVersionUnavailable("only version 7")
        return bytes(32)


def test_default_key_provider(settings):
    settings.MEDPORTAL_KEY_PROVIDER = "records.crypto.MasterKeyProvider"
    assert isinstance(get_key_provider(), MasterKeyProvider)
    del settings.MEDPORTAL_KEY_PROVIDER
    assert isinstance(get_key_provider(), MasterKeyProvider)


def test_key_provider_from_setting(settings):
    settings.MEDPORTAL_KEY_PROVIDER = f"{__name__}._FixedProvider"
    provider = get_key_provider()
    assert isinstance(provider, KeyProvider)
    wrapped = wrap_for_tenant(b"k" * 32, tenant="alpha", context=CONTEXT)
    assert wrapped.version == 7
    assert unwrap_for_tenant(wrapped, tenant="alpha", context=CONTEXT) == b"k" * 32


def test_unimportable_key_provider_is_a_configuration_error(settings):
    settings.MEDPORTAL_KEY_PROVIDER = "records.nowhere.Provider"
    with pytest.raises(ImproperlyConfigured):
        get_key_provider()


# --- Patient wraps (HPKE) -------------------------------------------------------


def test_x25519_generate_gives_raw_keys():
    private, public = x25519_generate()
    assert len(private) == 32 and len(public) == 32
    assert x25519_generate()[0] != private


def test_recipient_wrap_round_trip():
    private, public = x25519_generate()
    sealed = seal_section(PLAINTEXT, CONTEXT)
    blob = wrap_for_recipient(sealed.data_key, recipient_public=public, context=CONTEXT)
    assert sealed.data_key not in blob
    data_key = unwrap_for_recipient(blob, recipient_private=private, context=CONTEXT)
    assert open_section(sealed.ciphertext, sealed.nonce, data_key, CONTEXT) == PLAINTEXT


def test_another_patient_cannot_open_the_blob():
    _, public = x25519_generate()
    other_private, _ = x25519_generate()
    blob = wrap_for_recipient(b"k" * 32, recipient_public=public, context=CONTEXT)
    result = None
    with pytest.raises(DecryptionError, match="patient's copy") as caught:
        result = unwrap_for_recipient(blob, recipient_private=other_private, context=CONTEXT)
    assert result is None
    assert caught.value.__cause__ is None


def test_recipient_blob_is_bound_to_the_context():
    private, public = x25519_generate()
    blob = wrap_for_recipient(b"k" * 32, recipient_public=public, context=CONTEXT)
    other = dataclasses.replace(CONTEXT, patient_pseudonym="p-0000")
    with pytest.raises(DecryptionError):
        unwrap_for_recipient(blob, recipient_private=private, context=other)


def test_tampered_recipient_blob_fails():
    private, public = x25519_generate()
    blob = wrap_for_recipient(b"k" * 32, recipient_public=public, context=CONTEXT)
    for index in (0, 1, 40, len(blob) - 1):
        tampered = bytearray(blob)
        tampered[index] ^= 0x01
        with pytest.raises(DecryptionError):
            unwrap_for_recipient(bytes(tampered), recipient_private=private, context=CONTEXT)
    with pytest.raises(DecryptionError):
        unwrap_for_recipient(blob[:-1], recipient_private=private, context=CONTEXT)
