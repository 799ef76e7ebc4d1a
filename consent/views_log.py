"""The patient's "Who saw my records" page and the proof of one entry.

The filters travel in the query string: a decision, a hospital's slug, a date
and a page cursor say nothing about the patient's health, and a GET form
keeps the filtered page bookmarkable and the back button working.
"""

from __future__ import annotations

from functools import wraps

from django import forms
from django.contrib.auth.views import redirect_to_login
from django.http import Http404
from django.shortcuts import render

from accounts.permissions import user_has_role
from accounts.roles import Role
from consent.models import Decision
from consent.selectors import AccessLogFilters as Filters
from consent.selectors import (
    LogCursor,
    access_log_for_patient_account,
    access_log_hospitals_for_patient_account,
    access_log_proof_for_patient_account,
)


def _patients_only(view):
    """Sign-in page for anonymous users; 404 for every other role (the page
    does not exist for them, as the selectors answer)."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not user_has_role(request.user, (Role.PATIENT,), getattr(request, "tenant", None)):
            raise Http404("No such page.")
        return view(request, *args, **kwargs)

    return wrapped


class AccessLogFilterForm(forms.Form):
    decision = forms.ChoiceField(
        required=False, choices=[("", "Allowed and refused"), *Decision.choices]
    )
    hospital = forms.ChoiceField(required=False, label="Records held at")
    emergencies = forms.BooleanField(required=False, label="Emergencies only")
    since = forms.DateField(required=False, label="From", widget=forms.DateInput({"type": "date"}))
    until = forms.DateField(required=False, label="To", widget=forms.DateInput({"type": "date"}))
    before = forms.CharField(required=False, widget=forms.HiddenInput, max_length=100)

    def __init__(self, *args, hospitals: list[tuple[str, str]], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["hospital"].choices = [("", "Every hospital"), *hospitals]

    def clean_before(self) -> str:
        before = self.cleaned_data["before"]
        if before:
            try:
                LogCursor.parse(before)
            except ValueError:
                raise forms.ValidationError("This page link is not valid.") from None
        return before

    def clean(self):
        data = super().clean()
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            self.add_error("until", "The end date is before the start date.")
        return data

    def filters(self) -> Filters:
        data = self.cleaned_data
        return Filters(
            decision=data["decision"],
            hospital=data["hospital"],
            emergencies_only=data["emergencies"],
            since=data["since"],
            until=data["until"],
            before=data["before"],
        )


@_patients_only
def access_log(request):
    hospitals = access_log_hospitals_for_patient_account(user=request.user)
    form = AccessLogFilterForm(request.GET or None, hospitals=hospitals)
    page, status = None, 200
    if not form.is_bound:
        page = access_log_for_patient_account(user=request.user, filters=Filters())
    elif form.is_valid():
        page = access_log_for_patient_account(user=request.user, filters=form.filters())
    else:
        status = 400
    next_query = ""
    if page is not None and page.next_before:
        query = request.GET.copy()
        query["before"] = page.next_before
        next_query = query.urlencode()
    return render(
        request,
        "consent/access_log.html",
        {
            "form": form,
            "page": page,
            "next_query": next_query,
            "is_filtered": bool(request.GET),
        },
        status=status,
    )


@_patients_only
def access_log_proof(request, hospital_slug: str, entry_id: int):
    found = access_log_proof_for_patient_account(
        user=request.user, hospital_slug=hospital_slug, entry_id=entry_id
    )
    return render(request, "consent/access_log_proof.html", {"found": found})
