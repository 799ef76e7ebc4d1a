"""Record pages at a hospital: thin views over records.services (writes) and
records.selectors (reads). A page a user may not see is "not found" (404),
as the selectors answer, so its existence is not confirmed either."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from accounts.permissions import user_has_role
from accounts.roles import Role
from chain.services import TransactionRejected
from records.categories import Category, Level
from records.content import UNIT_LABELS, VITAL_SIGNS, ContentInvalid, content_clean
from records.forms import EntryForm, PatientForm
from records.selectors import (
    RecordView,
    attachment_open_for_user,
    patient_for_account,
    patient_get_for_user,
    patient_history_for_user,
    patient_list_for_user,
    record_get_for_user,
    record_search_for_user,
    record_view_for_user,
    records_elsewhere_for_staff,
    records_for_staff,
)
from records.services import (
    attachment_check,
    identity_clean,
    link_code_create,
    link_code_redeem,
    patient_create,
    patient_keys_recover,
    record_amend,
    record_create,
)

STAFF = (Role.ADMIN, Role.DOCTOR)


def _signed_in_with(*roles: str, forbidden_roles: tuple[str, ...] = ()) -> Callable:
    """Sign-in page for anonymous users; 404 for roles the page is not for (as
    the selectors answer); 403 for ``forbidden_roles`` (staff who may see the
    patient but not do this, e.g. an admin writing an entry)."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            tenant = getattr(request, "tenant", None)
            if user_has_role(request.user, roles, tenant):
                return view(request, *args, **kwargs)
            if forbidden_roles and user_has_role(request.user, forbidden_roles, tenant):
                raise PermissionDenied("Only doctors write record entries.")
            raise Http404("No such page.")

        return wrapped

    return decorator


# --- Display helpers ----------------------------------------------------------------


@dataclass
class Entry:
    """A RecordView with what the template cannot look up itself."""

    view: RecordView
    vitals: list[dict] = field(default_factory=list)
    notes: list[dict] = field(default_factory=list)
    diagnoses: list[dict] = field(default_factory=list)

    @property
    def content(self):
        return self.view.content

    @property
    def withheld_labels(self) -> list[str]:
        """ "Very restricted", "an attachment"… for the sections not shared."""
        labels = []
        for name in self.view.withheld:
            label = Level(name).label.lower() if name in Level.values else "an attachment"
            if label not in labels:
                labels.append(label)
        return labels


def _category_label(value: str) -> str:
    try:
        return Category(value).label
    except ValueError:
        return value


def _entries(views: list[RecordView]) -> list[Entry]:
    entries = []
    for view in views:
        entry = Entry(view)
        content = view.content or {}
        for vital in content.get("vitals") or []:
            sign = VITAL_SIGNS.get(vital.get("kind"))
            entry.vitals.append(
                {
                    "label": sign.label if sign else vital.get("kind"),
                    "value": vital.get("value"),
                    "unit": UNIT_LABELS.get(vital.get("unit"), vital.get("unit")),
                }
            )
        for note in content.get("notes") or []:
            entry.notes.append({**note, "category_label": _category_label(note.get("category"))})
        for diagnosis in content.get("diagnoses") or []:
            entry.diagnoses.append(
                {
                    **diagnosis,
                    "category_label": _category_label(diagnosis.get("category"))
                    if diagnosis.get("category") != Category.DIAGNOSES
                    else "",
                }
            )
        entries.append(entry)
    return entries


# --- Doctors and admins -------------------------------------------------------------


@_signed_in_with(*STAFF)
@require_http_methods(["GET", "POST"])
def patient_list(request):
    # Searches are POSTed: a name, record number or drug in a URL would end up
    # in access logs, proxies and browser history.
    query = request.POST.get("q", "").strip()[:200]
    icd10 = request.POST.get("icd10", "").strip()[:20]
    drug = request.POST.get("drug", "").strip()[:200]
    rows = patient_list_for_user(user=request.user, query=query)
    records, names = [], {}
    if icd10 or drug:
        records = record_search_for_user(user=request.user, icd10=icd10, drug=drug)
        if records:
            everyone = rows if not query else patient_list_for_user(user=request.user)
            names = {row.id: row for row in everyone}
    found = [{"record": record, "patient": names.get(record.patient_id)} for record in records]
    return render(
        request,
        "records/patient_list.html",
        {
            "rows": rows,
            "query": query,
            "icd10": icd10,
            "drug": drug,
            "found": found,
            "searched_records": bool(icd10 or drug),
        },
    )


@_signed_in_with(*STAFF)
@require_http_methods(["GET", "POST"])
def patient_new(request):
    form = PatientForm(request.POST or None)
    if request.method == "POST":
        valid = form.is_valid()
        try:
            identity = identity_clean(**form.identity_data())
        except ValidationError as error:
            form.add_validation_error(error)
            valid = False
        if valid:
            try:
                patient = patient_create(
                    actor=request.user,
                    identity=identity,
                    username=form.cleaned_data["username"],
                    password=form.cleaned_data["password"],
                )
            except ValidationError as error:
                form.add_validation_error(error)
            else:
                # No name: messages travel in a cookie or the session table.
                messages.success(request, "The patient was registered.")
                return redirect("records:patient_chart", patient_id=patient.id)
    status = 400 if request.method == "POST" else 200
    return render(request, "records/patient_new.html", {"form": form}, status=status)


@_signed_in_with(*STAFF)
def patient_chart(request, patient_id):
    row = patient_get_for_user(user=request.user, patient_id=patient_id)
    views = records_for_staff(user=request.user, patient=row.patient)
    elsewhere = records_elsewhere_for_staff(user=request.user, patient=row.patient)
    return render(
        request,
        "records/patient_chart.html",
        {
            "row": row,
            "identity": row.identity,
            "entries": _entries(views),
            "elsewhere": _entries(elsewhere),
            "can_write": user_has_role(request.user, (Role.DOCTOR,)),
            "can_recover": user_has_role(request.user, (Role.ADMIN,)),
        },
    )


def _entry_page(request, *, patient_row, original=None, initial=None):
    """The new-entry and amendment form: GET draws it, POST writes the record."""
    if request.method == "POST":
        form = EntryForm(request.POST, request.FILES)
        content = form.content()
        uploads = form.uploads()
        for row, upload in uploads:
            try:
                attachment_check(upload)
            except ValidationError as error:
                form.add_error(f"attachments-{row}-file", error.messages)
        if form.has_errors:
            try:
                content_clean(content)  # report the content's mistakes too
            except ContentInvalid as error:
                form.add_content_errors(error.errors)
        else:
            attachments = [upload for _row, upload in uploads]
            try:
                if original is None:
                    record_create(
                        author=request.user,
                        patient=patient_row.patient,
                        content=content,
                        attachments=attachments,
                    )
                else:
                    record_amend(
                        author=request.user,
                        original=original,
                        content=content,
                        attachments=attachments,
                    )
            except ContentInvalid as error:
                form.add_content_errors(error.errors)
            except ValidationError as error:
                form.add_validation_error(error)
            else:
                messages.success(
                    request,
                    "The amendment was saved." if original else "The entry was saved.",
                )
                return redirect("records:patient_chart", patient_id=patient_row.id)
        status = 400
    else:
        form = EntryForm(initial=initial)
        if original is None:
            form.values.setdefault("encounter-0-visit_date", timezone.localdate().isoformat())
        status = 200
    return render(
        request,
        "records/entry_form.html",
        {
            "form": form,
            "row": patient_row,
            "identity": patient_row.identity,
            "original": original,
        },
        status=status,
    )


@_signed_in_with(Role.DOCTOR, forbidden_roles=(Role.ADMIN,))
@require_http_methods(["GET", "POST"])
def entry_new(request, patient_id):
    row = patient_get_for_user(user=request.user, patient_id=patient_id)
    return _entry_page(request, patient_row=row)


@_signed_in_with(Role.DOCTOR, forbidden_roles=(Role.ADMIN,))
@require_http_methods(["GET", "POST"])
def entry_amend(request, record_id):
    original = record_get_for_user(user=request.user, record_id=record_id)
    if original.is_erased:
        raise Http404("An erased entry cannot be amended.")
    row = patient_get_for_user(user=request.user, patient_id=original.patient_id)
    initial = None
    if request.method == "GET":
        view = record_view_for_user(user=request.user, record_id=record_id)
        initial = view.content if not view.errors else None
    return _entry_page(request, patient_row=row, original=original, initial=initial)


# --- Staff and the patient ----------------------------------------------------------

_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._ -]+")


def _safe_filename(name: str, content_type: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE_FILENAME.sub("_", base).strip(" .") or "attachment"
    return base[:100]


@_signed_in_with(Role.ADMIN, Role.DOCTOR, Role.PATIENT)
def attachment_download(request, record_id, name):
    try:
        data, filename, content_type = attachment_open_for_user(
            user=request.user, record_id=record_id, name=name
        )
    except ValueError as error:  # a damaged attachment
        raise Http404("This attachment cannot be shown.") from error
    response = HttpResponse(data, content_type=content_type)
    response["Content-Disposition"] = (
        f'attachment; filename="{_safe_filename(filename, content_type)}"'
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return response


# --- Patients -----------------------------------------------------------------------


@_signed_in_with(Role.PATIENT)
def my_records(request):
    patient = patient_for_account(user=request.user)
    views = patient_history_for_user(user=request.user)
    return render(
        request,
        "records/my_records.html",
        {
            "entries": _entries(views),
            "fhir_url": f"/api/v1/patients/{patient.id}/fhir",
            "hospitals": sorted({view.origin_name for view in views}),
            # Linked: this account took another hospital's pseudonym, or another
            # hospital's entries already show.
            "is_linked": bool(patient.former_pseudonyms)
            or len({view.origin_slug for view in views}) > 1,
        },
    )


def _summary(views: list[RecordView]) -> dict:
    """The "bill": what the history adds up to. An entry that was amended is
    replaced by its amendment (both stay on the records page)."""
    today = timezone.localdate().isoformat()
    readable = [view for view in views if view.content and not view.errors]
    visits = [
        {
            "date": view.content["encounter"]["visit_date"],
            "hospital": view.origin_name,
            "department": view.content["encounter"]["department"],
            "complaint": view.content["encounter"]["chief_complaint"],
        }
        for view in readable
    ]
    visits.sort(key=lambda visit: visit["date"], reverse=True)
    current = [view for view in readable if not view.amended_by]
    current.sort(key=lambda view: view.content["encounter"]["visit_date"], reverse=True)
    diagnoses, medications, allergies = {}, [], {}
    for view in current:
        date = view.content["encounter"]["visit_date"]
        for item in view.content.get("diagnoses") or []:
            diagnoses.setdefault(
                item["code"], {**item, "since": date, "hospital": view.origin_name}
            )
        for item in view.content.get("medications") or []:
            if item.get("stop") and item["stop"] <= today:
                continue
            medications.append({**item, "hospital": view.origin_name})
        for item in view.content.get("allergies") or []:
            allergies.setdefault(
                item["substance"].casefold(), {**item, "hospital": view.origin_name}
            )
    return {
        "visits": visits,
        "diagnoses": list(diagnoses.values()),
        "medications": medications,
        "allergies": list(allergies.values()),
    }


@_signed_in_with(Role.PATIENT)
def my_summary(request):
    patient_for_account(user=request.user)
    views = patient_history_for_user(user=request.user)
    return render(
        request,
        "records/my_summary.html",
        {**_summary(views), "generated": timezone.now()},
    )


@_signed_in_with(Role.PATIENT)
@require_http_methods(["GET", "POST"])
def link(request):
    patient_for_account(user=request.user)
    issued, errors, create_errors, code = None, [], [], ""
    status = 200
    if request.method == "POST":
        action = request.POST.get("action")
        password = request.POST.get("password", "")
        if action == "create":
            try:
                issued = link_code_create(user=request.user, password=password)
            except ValidationError as error:
                create_errors, status = error.messages, 400
        elif action == "redeem":
            code = request.POST.get("code", "").strip()[:40]
            if not code:
                errors = ["Enter the code from the other hospital."]
            else:
                try:
                    link_code_redeem(user=request.user, code=code, password=password)
                except ValidationError as error:  # LinkRefused, or a wrong password
                    errors = error.messages
                else:
                    messages.success(
                        request, "Your accounts are linked: your records page shows both."
                    )
                    return redirect(reverse("records:mine"))
            status = 400
        elif action != "create":
            errors, status = ["Choose what to do."], 400
    return render(
        request,
        "records/link.html",
        {"issued": issued, "errors": errors, "create_errors": create_errors, "code": code},
        status=status,
    )


@_signed_in_with(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def patient_recover(request, patient_id):
    """An admin gives a patient who lost their password new keys and a temporary one."""
    row = patient_get_for_user(user=request.user, patient_id=patient_id)
    errors: list[str] = []
    if request.method == "POST":
        password = request.POST.get("temporary_password", "")
        if password != request.POST.get("temporary_password_again", ""):
            errors = ["The two passwords differ."]
        else:
            try:
                patient_keys_recover(
                    admin=request.user, patient=row.patient, temporary_password=password
                )
            except ValidationError as error:
                errors = error.messages
            except TransactionRejected as error:  # the hub's gate: nothing was changed
                errors = [f"The hub refused the new keys: {error}"]
            else:
                messages.success(
                    request,
                    "New keys were made and the temporary password set; the patient "
                    "chooses their own at the next sign-in.",
                )
                return redirect("records:patient_chart", patient_id=row.patient.id)
    return render(
        request,
        "records/patient_recover.html",
        {"row": row, "identity": row.identity, "errors": errors},
        status=400 if errors else 200,
    )
