"""What a patient's FHIR export carries about consent (``Consent`` resources)."""

from __future__ import annotations

from django_tenants.utils import get_public_schema_name, schema_context

from consent.policy import Grant, grants_current
from medportal.tenants.models import Tenant


def consent_for_export(*, patient) -> tuple[list[Grant], dict[tuple[str, str], str]]:
    """The patient's grants (latest state per grantee and purpose) and display
    names for their grantees: hospitals by name, doctors by pseudonym until the
    practitioner directory names them."""
    grants = grants_current(patient_pseudonyms=patient.pseudonyms)
    slugs = {grant.grantee_id for grant in grants if grant.grantee_type == "tenant"}
    with schema_context(get_public_schema_name()):
        hospitals = dict(Tenant.objects.filter(slug__in=slugs).values_list("slug", "name"))
    names = {("tenant", slug): name for slug, name in hospitals.items()}
    return grants, names
