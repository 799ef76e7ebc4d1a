"""What a patient's FHIR export carries about consent: ``Consent`` resources for
their grants and ``AuditEvent`` resources for their access log."""

from __future__ import annotations

from django.db import connection
from django_tenants.utils import get_public_schema_name, schema_context

from consent.policy import Grant, grants_current
from consent.selectors import AccessLogFilters, LogRow
from medportal.exchange.services import access_log_for_patient
from medportal.tenants.models import Tenant

# The export carries the newest entries of the access log only; the whole log
# stays on the "Who saw my records" page and its API, which page through it.
EXPORT_LOG_LIMIT = 500


def consent_for_export(*, patient) -> tuple[list[Grant], dict[tuple[str, str], str]]:
    """The patient's grants (latest state per grantee and purpose) and display
    names for their grantees: hospitals by name, research requests by title and
    organisation, doctors by pseudonym until the practitioner directory names them."""
    grants = grants_current(patient_pseudonyms=patient.pseudonyms)
    slugs = {grant.grantee_id for grant in grants if grant.grantee_type == "tenant"}
    with schema_context(get_public_schema_name()):
        hospitals = dict(Tenant.objects.filter(slug__in=slugs).values_list("slug", "name"))
    names = {("tenant", slug): name for slug, name in hospitals.items()}
    request_ids = [grant.grantee_id for grant in grants if grant.grantee_type == "request"]
    if request_ids:
        from medportal.research.models import ResearchRequest

        for request in ResearchRequest.objects.filter(pk__in=request_ids).select_related(
            "organisation"
        ):
            names[("request", str(request.pk))] = (
                f"Research request “{request.title}” ({request.organisation.name})"
            )
    return grants, names


def access_log_for_export(*, patient) -> list[LogRow]:
    """The newest ``EXPORT_LOG_LIMIT`` entries of the patient's access log, merged
    from every linked hospital through the hub's exchange, newest first, worded
    as the patient sees them. ``patient`` is the patient at the current hospital;
    the caller has checked that the patient themself is asking."""
    page = access_log_for_patient(
        requester_slug=connection.tenant.slug,
        pseudonym=patient.pseudonym,
        filters=AccessLogFilters(limit=EXPORT_LOG_LIMIT),
    )
    return page.rows
