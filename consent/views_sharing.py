"""Sharing pages: the patient's grants, grant form and access requests; the
doctor's "Request access" form and list of requests. Thin views over
consent.requests (services and selectors) and consent.grants."""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_date
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.roles import Role
from chain.services import TransactionRejected
from consent.grants import PURPOSES
from consent.requests import (
    LEVEL_EXPLANATIONS,
    PURPOSE_LABELS,
    access_request_answer,
    access_request_create,
    access_requests_for_patient,
    access_requests_for_practitioner,
    access_requests_mark_seen,
    categories_grouped,
    consent_receipt_for_patient,
    grants_for_patient,
    hospitals_list,
    practitioner_search,
    sharing_grant,
    sharing_revoke,
)
from records.selectors import patient_get_for_user
from records.views import _signed_in_with

GRANT_FIELDS = ("grantee_type", "grantee_id", "categories", "purpose", "expires_at", "password")
TX_HASH = re.compile(r"^[0-9a-f]{64}$")


def _errors(error: ValidationError) -> dict[str, list[str]]:
    return error.message_dict if hasattr(error, "error_dict") else {"__all__": error.messages}


def _category_choices() -> list[dict]:
    return [
        {
            "level": group.level,
            "label": group.label,
            "explanation": LEVEL_EXPLANATIONS.get(group.level, ""),
            "categories": group.categories,
        }
        for group in categories_grouped()
    ]


def _expiry(value: str) -> datetime | None:
    """A date from the form: the grant holds through that day (local time)."""
    value = (value or "").strip()
    if not value:
        return None
    day = parse_date(value) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value) else None
    if day is None:
        raise ValidationError({"expires_at": ["Enter a date as YYYY-MM-DD."]})
    return timezone.make_aware(datetime.combine(day + timedelta(days=1), time.min))


def _grantee(value: str) -> tuple[str, str]:
    kind, _, grantee_id = (value or "").partition(":")
    return kind, grantee_id


# --- Patients -----------------------------------------------------------------------


@_signed_in_with(Role.PATIENT)
@require_http_methods(["GET", "POST"])
def sharing(request):
    action = request.POST.get("action", "")
    errors: dict[str, list[str]] = {}
    # Names are searched by POST: a name typed into a URL ends up in logs.
    query = request.POST.get("q", "").strip()[:100]
    doctors = practitioner_search(query=query) if query else []
    chosen = {
        "grantee": request.POST.get("grantee", ""),
        "categories": request.POST.getlist("categories"),
        "purpose": request.POST.get("purpose", "treatment"),
        "expires_at": request.POST.get("expires_at", ""),
    }
    if action == "grant":
        grantee_type, grantee_id = _grantee(chosen["grantee"])
        try:
            submitted = sharing_grant(
                user=request.user,
                # Asked again at every change: it opens the key that signs.
                password=request.POST.get("password", ""),
                grantee_type=grantee_type,
                grantee_id=grantee_id,
                categories=chosen["categories"],
                purpose=chosen["purpose"],
                expires_at=_expiry(chosen["expires_at"]),
            )
        except TransactionRejected as error:
            errors = {"grant": [f"The hub refused the change: {error}"]}
        except ValidationError as error:
            errors = _errors(error)
        else:
            messages.success(request, f"Access granted. Transaction {submitted.hash}.")
            return redirect(f"{reverse('consent:sharing')}?receipt={submitted.hash}")
    requests = access_requests_for_patient(user=request.user)
    for access_request in requests:
        access_request.groups = categories_grouped(access_request.categories)
        access_request.granted_groups = categories_grouped(access_request.granted_categories)
    receipt = request.GET.get("receipt", "")
    context = {
        "rows": grants_for_patient(user=request.user),
        "pending_requests": [r for r in requests if not r.is_answered],
        "answered_requests": [r for r in requests if r.is_answered][:20],
        "hospitals": hospitals_list(),
        "doctors": doctors,
        "query": query,
        "searched": action == "search" or bool(query),
        "category_choices": _category_choices(),
        "purposes": [(purpose, PURPOSE_LABELS[purpose]) for purpose in PURPOSES],
        "chosen": chosen,
        "errors": errors,
        "general_errors": [
            message
            for field, field_messages in errors.items()
            if field not in GRANT_FIELDS
            for message in field_messages
        ],
        "receipt": receipt if TX_HASH.match(receipt) else "",
    }
    status = 400 if errors else 200
    return render(request, "consent/sharing.html", context, status=status)


def _refused(request, error: Exception):
    """Back to the Sharing page with the reasons, nothing changed."""
    if isinstance(error, TransactionRejected):
        messages.error(request, f"The hub refused the change: {error}")
    else:
        for messages_list in _errors(error).values():
            for message in messages_list:
                messages.error(request, message)
    return redirect("consent:sharing")


@_signed_in_with(Role.PATIENT)
@require_POST
def sharing_revoke_view(request):
    grantee_type, grantee_id = _grantee(request.POST.get("grantee", ""))
    try:
        submitted = sharing_revoke(
            user=request.user,
            password=request.POST.get("password", ""),
            grantee_type=grantee_type,
            grantee_id=grantee_id,
            purpose=request.POST.get("purpose", ""),
        )
    except (TransactionRejected, ValidationError) as error:
        return _refused(request, error)
    messages.success(request, f"Access revoked. Transaction {submitted.hash}.")
    return redirect(f"{reverse('consent:sharing')}?receipt={submitted.hash}")


@_signed_in_with(Role.PATIENT)
@require_POST
def request_answer(request, request_id):
    decision = request.POST.get("decision", "")
    if decision == "decline":
        approve = None
    elif decision == "approve_all":
        approve = next(
            (
                r.categories
                for r in access_requests_for_patient(user=request.user)
                if str(r.id) == str(request_id)
            ),
            [],
        )
    else:
        approve = request.POST.getlist("categories")
    try:
        answered = access_request_answer(
            user=request.user,
            request_id=request_id,
            approve_categories=approve,
            password=request.POST.get("password", ""),
        )
    except (TransactionRejected, ValidationError) as error:
        return _refused(request, error)
    if answered.grant_tx_hash:
        messages.success(
            request, f"You shared what you chose. Transaction {answered.grant_tx_hash}."
        )
        return redirect(f"{reverse('consent:sharing')}?receipt={answered.grant_tx_hash}")
    messages.success(request, "You declined the request. Nothing was shared.")
    return redirect("consent:sharing")


@_signed_in_with(Role.PATIENT)
@require_GET
def receipt(request, tx_hash):
    body = consent_receipt_for_patient(user=request.user, tx_hash=tx_hash)
    response = JsonResponse(body, json_dumps_params={"indent": 2, "sort_keys": True})
    response["Content-Disposition"] = f'attachment; filename="consent-receipt-{tx_hash}.json"'
    return response


# --- Doctors ------------------------------------------------------------------------


@_signed_in_with(Role.DOCTOR, forbidden_roles=(Role.ADMIN,))
@require_http_methods(["GET", "POST"])
def request_new(request, patient_id):
    row = patient_get_for_user(user=request.user, patient_id=patient_id)
    errors: dict[str, list[str]] = {}
    chosen = {
        "categories": request.POST.getlist("categories"),
        "purpose": request.POST.get("purpose", "treatment"),
        "reason": request.POST.get("reason", ""),
    }
    if request.method == "POST":
        try:
            access_request_create(
                user=request.user,
                patient=row.patient,
                categories=chosen["categories"],
                purpose=chosen["purpose"],
                reason=chosen["reason"],
            )
        except ValidationError as error:
            errors = _errors(error)
        else:
            messages.success(request, "Your request was sent to the patient.")
            return redirect("consent:requests")
    context = {
        "row": row,
        "category_choices": _category_choices(),
        "purposes": [(purpose, PURPOSE_LABELS[purpose]) for purpose in PURPOSES],
        "chosen": chosen,
        "errors": errors,
    }
    return render(request, "consent/request_new.html", context, status=400 if errors else 200)


@_signed_in_with(Role.DOCTOR)
@require_GET
def requests_list(request):
    rows = access_requests_for_practitioner(user=request.user)
    for row in rows:
        row.groups = categories_grouped(row.categories)
        row.granted_groups = categories_grouped(row.granted_categories)
        row.is_new_answer = row.is_answered and row.answer_seen_at is None
    response = render(request, "consent/requests.html", {"rows": rows})
    # Shown once as new: the notice is cleared after this page is rendered.
    access_requests_mark_seen(
        user=request.user, request_ids=[r.id for r in rows if r.is_new_answer]
    )
    return response
