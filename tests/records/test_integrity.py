"""Integrity of stored records: a changed, swapped or mis-keyed ciphertext is refused
loudly (an error naming the record) and never shows any content.

The 1,000-case flipped-bit test on bare sections is in test_crypto.py; here the
flips are made on rows and blobs written by the real ``record_create``.
"""

from __future__ import annotations

import random
import time
import uuid
from datetime import date

import pytest
from django_tenants.utils import tenant_context

from accounts.models import User
from records.crypto import (
    DecryptionError,
    SectionContext,
    WrappedKey,
    open_section,
    unwrap_for_tenant,
)
from records.models import Patient, Record, RecordSection
from records.selectors import patient_history_for_user, records_for_staff
from records.services import identity_clean, patient_create, record_create, record_store

pytestmark = pytest.mark.django_db

SECRET = "Integrity check chest pain"


def _content(complaint: str = SECRET) -> dict:
    return {
        "encounter": {
            "visit_date": "2024-01-15",
            "department": "Emergency",
            "chief_complaint": complaint,
        },
    }


def _user(username: str) -> User:
    return User.objects.get(username=username)


def _patient(*, username: str = "") -> Patient:
    return patient_create(
        actor=_user("alpha-doctor"),
        identity=identity_clean(
            given_name="Inte",
            family_name="Grity",
            sex="other",
            birth_date=date(1990, 1, 1),
            record_number=f"INT-{uuid.uuid4().hex[:10]}",
        ),
        username=username,
        password="a-long-enough-password-42" if username else "",
    )


def _context(section: RecordSection) -> SectionContext:
    return SectionContext(
        record_id=str(section.record_id),
        section=section.name,
        patient_pseudonym=section.record.patient_pseudonym,
    )


def _flip_byte(data: bytes, rng: random.Random, start: int = 0, end: int | None = None) -> bytes:
    end = len(data) if end is None else end
    changed = bytearray(data)
    changed[rng.randrange(start, end)] ^= rng.randrange(1, 256)
    return bytes(changed)


def _assert_refused(view, record: Record) -> None:
    assert view.id == str(record.id)
    assert view.content is None
    assert not view.attachments
    assert view.errors
    assert any(str(record.id) in error for error in view.errors), view.errors
    assert not any(SECRET in error for error in view.errors)


def test_one_flipped_byte_in_a_blob_is_an_integrity_error(alpha):
    with tenant_context(alpha):
        patient = _patient(username=f"int-{uuid.uuid4().hex[:8]}")
        damaged = record_create(author=_user("alpha-doctor"), patient=patient, content=_content())
        intact = record_create(
            author=_user("alpha-doctor"), patient=patient, content=_content("Intact entry")
        )
        section = damaged.sections.get()
        path = record_store().path_for(section.sha256)
        blob = path.read_bytes()
        path.write_bytes(_flip_byte(blob, random.Random(7)))

        staff = {
            view.id: view for view in records_for_staff(user=_user("alpha-doctor"), patient=patient)
        }
        _assert_refused(staff[str(damaged.id)], damaged)
        assert any("CiphertextMismatch" in error for error in staff[str(damaged.id)].errors)
        good = staff[str(intact.id)]
        assert not good.errors and good.content["encounter"]["chief_complaint"] == "Intact entry"

        history = {view.id: view for view in patient_history_for_user(user=patient.user)}
        _assert_refused(history[str(damaged.id)], damaged)
        assert not history[str(intact.id)].errors


def test_a_blob_swapped_for_another_records_is_refused(alpha):
    with tenant_context(alpha):
        patient = _patient()
        doctor = _user("alpha-doctor")
        record_a = record_create(author=doctor, patient=patient, content=_content())
        record_b = record_create(author=doctor, patient=patient, content=_content("Other entry"))
        section_a, section_b = record_a.sections.get(), record_b.sections.get()
        store = record_store()
        store.path_for(section_a.sha256).write_bytes(store.path_for(section_b.sha256).read_bytes())

        views = {view.id: view for view in records_for_staff(user=doctor, patient=patient)}
        _assert_refused(views[str(record_a.id)], record_a)
        assert not views[str(record_b.id)].errors


def test_a_row_pointing_at_another_records_blob_fails_the_chain_pointer(alpha):
    """Someone with write access to the database (not the chain) re-points A's
    section at B's (intact) blob: the chain's pointer for A refuses it."""
    with tenant_context(alpha):
        patient = _patient()
        doctor = _user("alpha-doctor")
        record_a = record_create(author=doctor, patient=patient, content=_content())
        record_b = record_create(author=doctor, patient=patient, content=_content("Other entry"))
        section_b = record_b.sections.get()
        RecordSection.objects.filter(record=record_a).update(sha256=section_b.sha256)

        views = {view.id: view for view in records_for_staff(user=doctor, patient=patient)}
        view = views[str(record_a.id)]
        _assert_refused(view, record_a)
        assert any("does not match the chain's pointer" in error for error in view.errors)


def test_betas_kek_cannot_unwrap_alphas_data_keys(alpha):
    with tenant_context(alpha):
        patient = _patient()
        record = record_create(author=_user("alpha-doctor"), patient=patient, content=_content())
        section = record.sections.select_related("record").get()
        wrapped = WrappedKey.from_dict(section.tenant_wrap)
        context = _context(section)
        assert len(unwrap_for_tenant(wrapped, tenant="alpha", context=context)) == 32
        with pytest.raises(DecryptionError, match=str(record.id)):
            unwrap_for_tenant(wrapped, tenant="beta", context=context)
        identity_context = SectionContext(
            record_id=f"patient-{patient.id}",
            section="identity",
            patient_pseudonym=patient.pseudonym,
        )
        with pytest.raises(DecryptionError):
            unwrap_for_tenant(
                WrappedKey.from_dict(patient.identity_wrap), tenant="beta", context=identity_context
            )


RECORDS = 1000


def test_a_flipped_byte_in_each_of_many_real_records_is_refused(alpha):
    """RECORDS real records (record_create), a quarter each with one changed byte in
    the stored ciphertext body, the GCM tag, the nonce or the associated data.

    Each is first opened directly (open_section with the real, unwrapped data key):
    always DecryptionError, never plaintext. Then the damage is written back (blob
    file, nonce column, section name) and the patient's records are read the normal
    way: every one of them shows an error naming it and no content."""
    rng = random.Random(20261120)
    targets = ("ciphertext", "tag", "nonce", "aad")
    with tenant_context(alpha):
        doctor = _user("alpha-doctor")
        patients = [_patient(), _patient()]
        started = time.perf_counter()
        records = [
            record_create(author=doctor, patient=patients[0], content=_content(f"{SECRET} {n}"))
            for n in range(RECORDS)
        ]
        elapsed = time.perf_counter() - started
        assert elapsed < 600, f"{RECORDS} record_create calls took {elapsed:.0f} s"
        store = record_store()
        sections = list(
            RecordSection.objects.filter(record__patient=patients[0]).select_related("record")
        )
        assert len(sections) == RECORDS
        counts = dict.fromkeys(targets, 0)
        for position, section in enumerate(sections):
            context = _context(section)
            ciphertext, nonce = store.get(section.sha256), bytes(section.nonce)
            data_key = unwrap_for_tenant(
                WrappedKey.from_dict(section.tenant_wrap), tenant="alpha", context=context
            )
            assert SECRET.encode() in open_section(ciphertext, nonce, data_key, context)
            target = targets[position % 4]
            counts[target] += 1
            open_context = context
            if target == "ciphertext":
                ciphertext = _flip_byte(ciphertext, rng, 0, len(ciphertext) - 16)
            elif target == "tag":
                ciphertext = _flip_byte(ciphertext, rng, len(ciphertext) - 16)
            elif target == "nonce":
                nonce = _flip_byte(nonce, rng)
            else:
                other = sections[(position + 1) % len(sections)]
                open_context = rng.choice(
                    [
                        SectionContext(
                            str(other.record_id), section.name, context.patient_pseudonym
                        ),
                        SectionContext(context.record_id, "restricted", context.patient_pseudonym),
                        SectionContext(context.record_id, section.name, patients[1].pseudonym),
                    ]
                )
            result = None
            with pytest.raises(DecryptionError) as caught:
                result = open_section(ciphertext, nonce, data_key, open_context)
            assert result is None
            assert open_context.record_id in str(caught.value)
            assert SECRET not in str(caught.value)

            # The same damage, made where an attacker or bit rot would make it.
            if target in ("ciphertext", "tag"):
                store.path_for(section.sha256).write_bytes(ciphertext)
            elif target == "nonce":
                section.nonce = nonce
                section.save(update_fields=["nonce"])
            else:
                section.name = "restricted"
                section.save(update_fields=["name"])
        assert all(count == RECORDS // 4 for count in counts.values()), counts

        views = records_for_staff(user=doctor, patient=patients[0])
        assert len(views) == RECORDS
        by_id = {str(record.id): record for record in records}
        for view in views:
            _assert_refused(view, by_id[view.id])
