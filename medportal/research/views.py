"""Research pages: thin views over medportal.research.services (writes) and
medportal.research.selectors (reads).

* researchers (research organisations): their requests, the request form,
  each request's answers, releases and result, dataset downloads;
* hospital admins: submitted requests to approve, decline and release;
* patients: the requests they were invited to, and their standing preference.

A page for another role is "not found" (404), as the selectors answer. A
service's ValidationError is shown on the page it came from (status 400);
PermissionDenied is a 403.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.roles import Role
from chain.services import TransactionRejected
from consent.models import InvitationStatus, ResearchPreference
from consent.requests import categories_grouped
from medportal.research.deid import AGE_BANDS
from medportal.research.forms import DecisionForm, PreferenceForm, RequestForm
from medportal.research.keys import SealedDataError
from medportal.research.models import (
    Participation,
    ParticipationStatus,
    RequestStatus,
    ResearchRequest,
)
from medportal.research.release import ALL_CODES, SEXES, codes_under
from medportal.research.selectors import (
    InvitationView,
    ethics_document_for_user,
    invitations_for_patient,
    participation_here,
    release_for_researcher,
    releases_checked,
    request_for_hospital,
    request_for_researcher,
    requests_for_hospital,
    requests_for_researcher,
    research_preference_for_patient,
)
from medportal.research.services import (
    dataset_open,
    participation_decide,
    release_in_progress,
    release_start,
    request_close,
    request_save,
    request_submit,
    request_withdraw,
    research_answer,
    research_preference_set,
)
from records.store import StoreError
from records.views import _signed_in_with

_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._ -]+")


def _messages_of(error: Exception) -> dict[str, list[str]]:
    """A service's refusal as {field: [messages]}; the hub's refusal as a general one."""
    if isinstance(error, TransactionRejected):
        return {"__all__": [f"The hub refused the change: {error}"]}
    if isinstance(error, ValidationError) and hasattr(error, "error_dict"):
        return error.message_dict
    return {"__all__": list(getattr(error, "messages", [str(error)]))}


def _flat(errors: dict[str, list[str]]) -> list[str]:
    return [message for field_messages in errors.values() for message in field_messages]


# --- Plain words --------------------------------------------------------------------


@dataclass(frozen=True)
class Criterion:
    label: str
    value: str


def _criteria_words(research_request: ResearchRequest) -> list[Criterion]:
    criteria = research_request.criteria or {}
    codes = criteria.get("codes") or []
    if codes:
        coded = ", ".join(
            f"{code} and the codes under it" if len(codes_under(code)) > 1 else code
            for code in codes
        )
    else:
        coded = "Any diagnosis"
    low, high = criteria.get("age_min"), criteria.get("age_max")
    if low is not None and high is not None:
        ages = f"{low} to {high} years"
    elif low is not None:
        ages = f"{low} years or older"
    elif high is not None:
        ages = f"{high} years or younger"
    else:
        ages = "Any age"
    start, end = criteria.get("period_from"), criteria.get("period_to")
    if start and end:
        period = f"Entries written from {start} to {end}"
    elif start:
        period = f"Entries written from {start} on"
    elif end:
        period = f"Entries written until {end}"
    else:
        period = "Entries written at any time"
    return [
        Criterion("ICD-10 codes", coded),
        Criterion("Age today", ages),
        Criterion("Sex", (criteria.get("sex") or "any").capitalize()),
        Criterion("Period of care", period),
    ]


def _status_class(status: str) -> str:
    return {
        RequestStatus.DRAFT: "badge-pending",
        RequestStatus.OPENED: "badge-ok",
        RequestStatus.CLOSED: "badge-closed",
        RequestStatus.WITHDRAWN: "badge-denied",
        ParticipationStatus.APPROVED: "badge-ok",
        ParticipationStatus.DECLINED: "badge-denied",
        ParticipationStatus.RELEASED: "badge-released",
    }.get(status, "")


def _is_expired(research_request: ResearchRequest) -> bool:
    return research_request.expires_at <= timezone.now()


@dataclass(frozen=True)
class AggregateCell:
    sex: str
    value: int | str  # "< k" for a small count
    is_small: bool


@dataclass(frozen=True)
class AggregateRow:
    code: str
    band: str
    cells: list[AggregateCell]


def _aggregate_table(research_request: ResearchRequest, hospital_names: dict[str, str]):
    """The reconstructed counts as rows of criterion code x age band, one column
    per sex. Rows with nobody in them are left out (zero hides nobody)."""
    result = research_request.aggregate_result
    if not result:
        return None
    cells = result.get("cells") or {}
    codes = (research_request.criteria or {}).get("codes") or [ALL_CODES]
    rows = []
    for code in codes:
        for band in AGE_BANDS:
            values = [cells.get(f"{code}|{band}|{sex}", 0) for sex in SEXES]
            if any(value != 0 for value in values):
                cells_here = [
                    AggregateCell(sex.capitalize(), value, isinstance(value, str))
                    for sex, value in zip(SEXES, values, strict=True)
                ]
                rows.append(
                    AggregateRow("Any code" if code == ALL_CODES else code, band, cells_here)
                )
    return {
        "sexes": [sex.capitalize() for sex in SEXES],
        "rows": rows,
        "k": result.get("k", research_request.k),
        "hospitals": [hospital_names.get(slug, slug) for slug in result.get("hospitals", [])],
    }


def _request_words(research_request: ResearchRequest) -> dict:
    return {
        "research_request": research_request,
        "status_class": _status_class(research_request.status),
        "category_groups": categories_grouped(research_request.categories),
        "criteria": _criteria_words(research_request),
        "is_expired": _is_expired(research_request),
    }


# --- Researchers ----------------------------------------------------------------------


@_signed_in_with(Role.RESEARCHER)
@require_GET
def request_list(request):
    rows = [
        {"item": item, "status_class": _status_class(item.status)}
        for item in requests_for_researcher(user=request.user)
    ]
    return render(request, "research/request_list.html", {"rows": rows})


def _request_form_page(request, research_request: ResearchRequest | None):
    """The new-request and edit form. "Save draft" saves; "Submit" saves, then
    submits: when submitting is refused the draft stays saved and the form
    (now editing that draft) shows why."""
    draft_saved = False
    if request.method == "POST":
        form = RequestForm(request.POST, request.FILES, research_request=research_request)
        form.is_valid()  # only collects; the service says what is wrong
        submitting = request.POST.get("action") == "submit"
        try:
            saved = request_save(
                user=request.user,
                data=form.service_data(),
                document=form.document(),
                request=research_request,
            )
        except (ValidationError, TransactionRejected) as error:
            form.add_validation_error(ValidationError(_messages_of(error)))
        else:
            if not submitting:
                messages.success(request, "Your draft was saved. Nothing was sent yet.")
                return redirect("research:detail", request_id=saved.id)
            try:
                request_submit(user=request.user, request=saved)
            except (ValidationError, TransactionRejected) as error:
                research_request, draft_saved = saved, True
                form.add_validation_error(ValidationError(_messages_of(error)))
            else:
                messages.success(
                    request,
                    "Your request was submitted: every hospital's administrators can now "
                    "review it.",
                )
                return redirect("research:detail", request_id=saved.id)
        status = 400
    else:
        form = RequestForm(research_request=research_request)
        status = 200
    return render(
        request,
        "research/request_form.html",
        {
            "form": form,
            "research_request": research_request,
            "draft_saved": draft_saved,
            "form_action": (
                reverse("research:edit", kwargs={"request_id": research_request.id})
                if research_request
                else reverse("research:new")
            ),
        },
        status=status,
    )


@_signed_in_with(Role.RESEARCHER)
@require_http_methods(["GET", "POST"])
def request_new(request):
    return _request_form_page(request, None)


@_signed_in_with(Role.RESEARCHER)
@require_http_methods(["GET", "POST"])
def request_edit(request, request_id):
    research_request = request_for_researcher(user=request.user, request_id=request_id)
    if research_request.status != RequestStatus.DRAFT and request.method == "GET":
        messages.info(request, "Only a draft can be edited; this request was submitted.")
        return redirect("research:detail", request_id=research_request.id)
    return _request_form_page(request, research_request)


def _detail_context(research_request: ResearchRequest) -> dict:
    participations = list(research_request.participations.select_related("hospital"))
    releases = releases_checked(research_request)
    anything_released = any(
        item.status == ParticipationStatus.RELEASED for item in participations
    ) or bool(releases)
    is_open = research_request.status == RequestStatus.OPENED
    names = {item.hospital.slug: item.hospital.name for item in participations}
    return {
        **_request_words(research_request),
        "answers": [
            {"participation": item, "status_class": _status_class(item.status)}
            for item in participations
        ],
        "releases": releases,
        "aggregate": _aggregate_table(research_request, names),
        "shares_sent": sum(
            1 for item in participations if item.status == ParticipationStatus.RELEASED
        ),
        "shares_expected": sum(
            1 for item in participations if item.status != ParticipationStatus.DECLINED
        ),
        "can_withdraw": is_open and not anything_released,
        "can_close": is_open,
        "is_draft": research_request.status == RequestStatus.DRAFT,
    }


def _detail_page(request, research_request: ResearchRequest, errors=None):
    context = _detail_context(research_request)
    context["action_errors"] = _flat(errors or {})
    return render(request, "research/request_detail.html", context, status=400 if errors else 200)


@_signed_in_with(Role.RESEARCHER)
@require_GET
def request_detail(request, request_id):
    research_request = request_for_researcher(user=request.user, request_id=request_id)
    return _detail_page(request, research_request)


@_signed_in_with(Role.RESEARCHER)
@require_POST
def request_withdraw_view(request, request_id):
    research_request = request_for_researcher(user=request.user, request_id=request_id)
    was_draft = research_request.status == RequestStatus.DRAFT
    try:
        request_withdraw(user=request.user, request=research_request)
    except (ValidationError, TransactionRejected) as error:
        research_request.refresh_from_db()
        return _detail_page(request, research_request, _messages_of(error))
    if was_draft:
        messages.success(request, "The draft was deleted.")
        return redirect("research:list")
    messages.success(request, "The request was withdrawn. Hospitals can no longer answer it.")
    return redirect("research:detail", request_id=research_request.id)


@_signed_in_with(Role.RESEARCHER)
@require_POST
def request_close_view(request, request_id):
    research_request = request_for_researcher(user=request.user, request_id=request_id)
    try:
        request_close(user=request.user, request=research_request)
    except (ValidationError, TransactionRejected) as error:
        research_request.refresh_from_db()
        return _detail_page(request, research_request, _messages_of(error))
    messages.success(
        request, "The request was closed: no more approvals or releases. Datasets stay here."
    )
    return redirect("research:detail", request_id=research_request.id)


def _attachment_name(name: str, default: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return (_UNSAFE_FILENAME.sub("_", base).strip(" .") or default)[:100]


@_signed_in_with(Role.RESEARCHER)
@require_GET
def dataset_download(request, release_id):
    release = release_for_researcher(user=request.user, release_id=release_id)
    try:
        archive = dataset_open(user=request.user, release=release)
    except (StoreError, SealedDataError) as error:
        raise Http404("This dataset cannot be read.") from error
    name = _attachment_name(
        f"research-{release.hospital.slug}-{str(release.request_id)[:8]}.zip", "dataset.zip"
    )
    response = HttpResponse(archive, content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return response


@_signed_in_with(Role.RESEARCHER, Role.ADMIN)
@require_GET
def ethics_document(request, request_id):
    data, name = ethics_document_for_user(user=request.user, request_id=request_id)
    response = HttpResponse(data, content_type="application/pdf")
    # The store only takes files whose content is a PDF (``ethics_document_store``).
    response["Content-Disposition"] = f'inline; filename="{_attachment_name(name, "approval.pdf")}"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return response


# --- Hospital admins ------------------------------------------------------------------


def _answer_here(research_request: ResearchRequest) -> Participation | None:
    """This hospital's answer, from the prefetch of ``review_list``."""
    answers = getattr(research_request, "answers_here", None)
    return answers[0] if answers else None


@_signed_in_with(Role.ADMIN)
@require_GET
def review_list(request):
    requests = requests_for_hospital(user=request.user)  # with this hospital's answers
    rows = []
    for item in requests:
        answer = _answer_here(item)
        rows.append(
            {
                "item": item,
                "status_class": _status_class(item.status),
                "category_groups": categories_grouped(item.categories),
                "answer": answer,
                "answer_class": _status_class(answer.status) if answer else "badge-pending",
                "is_expired": _is_expired(item),
            }
        )
    return render(request, "research/review_list.html", {"rows": rows})


def _review_page(request, research_request, *, form=None, errors=None):
    participation = participation_here(research_request)
    is_answerable = research_request.status == RequestStatus.OPENED and not _is_expired(
        research_request
    )
    releases = releases_checked(research_request, hospital=request.tenant)
    context = {
        **_request_words(research_request),
        "participation": participation,
        "participation_class": _status_class(participation.status) if participation else "",
        "form": form or DecisionForm(),
        "can_decide": is_answerable and participation is None,
        "release_in_progress": release_in_progress(participation),
        # Rows may be released again (patients who opted in since); an
        # aggregate's shares are sent once.
        "can_release": is_answerable
        and participation is not None
        and not release_in_progress(participation)
        and (
            participation.status == ParticipationStatus.APPROVED
            or (
                participation.status == ParticipationStatus.RELEASED
                and not research_request.is_aggregate
            )
        ),
        "released_before": bool(releases),
        "releases": releases,
        "action_errors": _flat(errors or {}),
    }
    has_errors = bool(errors) or (form is not None and form.errors)
    return render(request, "research/review.html", context, status=400 if has_errors else 200)


@_signed_in_with(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def review(request, request_id):
    research_request = request_for_hospital(user=request.user, request_id=request_id)
    if request.method == "GET":
        return _review_page(request, research_request)
    action = request.POST.get("action", "")
    if action in ("approve", "decline"):
        form = DecisionForm(request.POST)
        form.is_valid()
        try:
            participation_decide(
                admin=request.user,
                request=research_request,
                approve=action == "approve",
                reason=request.POST.get("reason", ""),
            )
        except (ValidationError, TransactionRejected) as error:
            errors = _messages_of(error)
            for message in errors.pop("reason", []):
                form.add_error("reason", message)
            return _review_page(request, research_request, form=form, errors=errors)
        if action == "approve":
            messages.success(
                request,
                "You approved the request. Matching patients are being invited; release "
                "your part when they have had time to answer.",
            )
        else:
            messages.success(request, "You declined the request. The organisation sees why.")
        return redirect("research:review", request_id=research_request.id)
    if action == "release":
        try:
            release_start(admin=request.user, request=research_request)
        except (ValidationError, TransactionRejected) as error:
            return _review_page(request, research_request, errors=_messages_of(error))
        messages.success(
            request,
            "The release is being prepared. You will be told here, under Notifications, "
            "when it is done (for a large hospital, some minutes).",
        )
        return redirect("research:review", request_id=research_request.id)
    return _review_page(request, research_request, errors={"__all__": ["Choose an action."]})


# --- Patients -------------------------------------------------------------------------


@dataclass
class InvitationRow:
    view: InvitationView
    category_groups: list
    can_take_part: bool
    can_decline: bool
    can_withdraw: bool
    is_open: bool
    errors: list[str]
    password_errors: list[str]


def _invitation_rows(user, errors_for: str = "", errors=None) -> list[InvitationRow]:
    errors = errors or {}
    rows = []
    for view in invitations_for_patient(user=user):
        mine = str(view.request.id) == errors_for
        # The selector's can_answer looks at the status only; an expired request
        # is refused by the service too, so do not offer it.
        can_answer = view.can_answer and not _is_expired(view.request)
        rows.append(
            InvitationRow(
                view=view,
                category_groups=categories_grouped(view.request.categories),
                can_take_part=can_answer and view.status != InvitationStatus.OPTED_IN,
                can_decline=can_answer and view.status == InvitationStatus.PENDING,
                can_withdraw=view.status == InvitationStatus.OPTED_IN,
                is_open=can_answer,
                errors=[m for k, v in errors.items() if k != "password" for m in v] if mine else [],
                password_errors=errors.get("password", []) if mine else [],
            )
        )
    return rows


def _request_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError):
        raise Http404("No such invitation.") from None


@_signed_in_with(Role.PATIENT)
@require_http_methods(["GET", "POST"])
def invitations(request):
    action = request.POST.get("action", "") if request.method == "POST" else ""
    errors: dict[str, list[str]] = {}
    errors_for = ""
    preference_form = PreferenceForm(
        request.POST if action == "preference" else None,
        initial={"choice": research_preference_for_patient(user=request.user)},
    )
    if action == "preference" and preference_form.is_valid():
        choice = preference_form.cleaned_data["choice"]
        try:
            research_preference_set(user=request.user, choice=choice)
        except ValidationError as error:
            preference_form.add_error("choice", _flat(_messages_of(error)))
        else:
            if choice == ResearchPreference.Choice.NEVER_ASK:
                messages.success(
                    request,
                    "Saved: this hospital will not ask you about new research requests.",
                )
            else:
                messages.success(request, "Saved: you will be asked about each research request.")
            return redirect("research:invitations")
    elif action in ("take_part", "decline", "withdraw"):
        errors_for = _request_id(request.POST.get("request", ""))
        try:
            status = research_answer(
                user=request.user,
                password=request.POST.get("password", ""),
                request_id=errors_for,
                take_part=action == "take_part",
            )
        except (ValidationError, TransactionRejected) as error:
            errors = _messages_of(error)
        else:
            messages.success(
                request,
                {
                    InvitationStatus.OPTED_IN: "Thank you: you take part. Your consent is "
                    "signed and recorded on the chain.",
                    InvitationStatus.OPTED_OUT: "You said no. Nothing of yours will be released "
                    "for this request.",
                    InvitationStatus.WITHDRAWN: "You withdrew. Your withdrawal is signed and "
                    "recorded; you will not be part of any later release.",
                }.get(status, "Your answer was saved."),
            )
            return redirect("research:invitations")
    elif request.method == "POST" and action != "preference":
        errors = {"__all__": ["Choose an answer."]}
    context = {
        "rows": _invitation_rows(request.user, errors_for, errors),
        "preference_form": preference_form,
        "general_errors": _flat(errors) if errors and not errors_for else [],
    }
    has_errors = bool(errors) or bool(preference_form.errors)
    return render(request, "research/invitations.html", context, status=400 if has_errors else 200)
