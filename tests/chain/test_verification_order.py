"""Keys are learned in block order: a key registered earlier in a block signs
what follows it in the same block."""

from __future__ import annotations

from datetime import date

import pytest
from django_tenants.utils import tenant_context

from chain.models import Block
from chain.selectors import chain_verify_schema
from chain.services import block_seal, replica_sync
from consent.grants import consent_grant
from records.services import PatientIdentity, patient_create
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def test_a_patient_registered_and_consenting_in_one_block_verifies(alpha):
    with tenant_context(alpha):
        patient = patient_create(
            actor=None,
            identity=PatientIdentity(
                given_name="Ines",
                family_name="Moreau",
                sex="female",
                birth_date=date(1990, 5, 6),
                record_number="OB-1",
            ),
            username="ines",
            password=PASSWORD,
            must_change_password=False,
        )
        grant = consent_grant(
            user=patient.user,
            password=PASSWORD,
            grantee_type="tenant",
            grantee_id="beta",
            categories=["labs"],
        )
    block_seal(force=True)
    block = Block.objects.get(transactions__hash=grant.hash)
    kinds = [(item.kind, item.payload.get("subject")) for item in block.transactions.all()]
    assert ("identity", patient.pseudonym) in kinds and ("access", None) in kinds
    replica_sync(tenant=alpha)
    with tenant_context(alpha):
        report = chain_verify_schema(schema_name=alpha.schema_name, tenant_slug="alpha")
    assert report.ok, report.reason
