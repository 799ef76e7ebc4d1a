"""Emergency access and notification pages at a hospital: thin views over
consent.emergency and consent.notifications. Messages never name the patient
or repeat the reason: they end up in the session store."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from accounts.permissions import role_required, user_has_role
from accounts.roles import Role
from chain.services import TransactionRejected
from consent.emergency import (
    NOTE_MAX,
    REASON_MAX,
    REASON_MIN,
    emergencies_active_for_doctor,
    emergency_declare,
    emergency_hours,
    emergency_levels,
    emergency_review,
    emergency_reviews_for_user,
)
from consent.models import EmergencyAccess
from consent.notifications import notifications_for_user, notifications_mark_read
from records.categories import Level
from records.selectors import patient_get_for_user


class EmergencyForm(forms.Form):
    reason = forms.CharField(
        label="Why is this an emergency?",
        min_length=REASON_MIN,
        max_length=REASON_MAX,
        widget=forms.Textarea(attrs={"rows": 5}),
        help_text="Stored encrypted. The hospital's administrators read it when they review.",
    )


class ReviewForm(forms.Form):
    emergency = forms.UUIDField(widget=forms.HiddenInput)
    verdict = forms.ChoiceField(choices=[("justified", "Justified"), ("unjustified", "Not")])
    note = forms.CharField(required=False, max_length=NOTE_MAX)


def _apply_errors(form: forms.Form, error: ValidationError) -> None:
    if hasattr(error, "error_dict"):
        for field, messages_ in error.message_dict.items():
            form.add_error(field if field in form.fields else None, messages_)
    else:
        form.add_error(None, error.messages)


@require_http_methods(["GET", "POST"])
@role_required(Role.DOCTOR)
def emergency_declare_page(request, patient_id):
    row = patient_get_for_user(user=request.user, patient_id=patient_id)
    form = EmergencyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            emergency = emergency_declare(
                doctor=request.user, patient=row.patient, reason=form.cleaned_data["reason"]
            )
        except ValidationError as error:
            _apply_errors(form, error)
        except TransactionRejected:
            form.add_error(None, "The hub refused the emergency access. Try again.")
        else:
            messages.warning(
                request,
                f"Emergency access declared until {emergency.expires_at:%Y-%m-%d %H:%M} UTC. "
                "Every read is logged, the patient has been told, and an administrator "
                "will review it.",
            )
            return redirect("records:patient_chart", patient_id=row.patient.id)
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "consent/emergency_declare.html",
        {
            "form": form,
            "row": row,
            "identity": row.identity,
            "hours": emergency_hours(),
            "levels": [Level(level).label for level in emergency_levels()],
            "active": emergencies_active_for_doctor(user=request.user, patient=row.patient),
        },
        status=status,
    )


@require_http_methods(["GET", "POST"])
@role_required(Role.ADMIN)
def emergency_reviews_page(request):
    form = ReviewForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                emergency_review(
                    admin=request.user,
                    emergency_id=form.cleaned_data["emergency"],
                    justified=form.cleaned_data["verdict"] == "justified",
                    note=form.cleaned_data["note"],
                )
            except EmergencyAccess.DoesNotExist:
                raise Http404("No such emergency access.") from None
            except ValidationError as error:
                messages.error(request, " ".join(error.messages))
            else:
                messages.success(request, "The review was saved.")
            return redirect("consent:emergency_reviews")
        status = 400
    return render(
        request,
        "consent/emergency_reviews.html",
        {"rows": emergency_reviews_for_user(user=request.user), "form": form},
        status=status,
    )


@require_http_methods(["GET", "POST"])
def notifications_page(request):
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if not user_has_role(request.user, (Role.PATIENT, Role.DOCTOR, Role.ADMIN)):
        raise PermissionDenied("Notifications are kept at hospitals.")
    if request.method == "POST":
        if notifications_mark_read(user=request.user):
            messages.success(request, "All notifications are marked read.")
        return redirect("consent:notifications")
    notifications = notifications_for_user(user=request.user)
    return render(
        request,
        "consent/notifications.html",
        {
            "notifications": notifications,
            "unread": sum(1 for item in notifications if not item.is_read),
        },
    )
