"""Hospital admin for patients and records: bookkeeping only, never decrypted PHI.

Rows are read-only (records are written through the services, and a record is
never edited); the one thing an admin does here is crypto-shredding a record
("Erase selected records"), which asks for a reason on an intermediate page
and goes through :func:`records.services.record_erase`.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied, ValidationError
from django.template.response import TemplateResponse

from accounts.permissions import user_has_role
from accounts.roles import Role
from medportal.admin_sites import RoleAdminMixin, tenant_admin_site
from records.models import Patient, Record
from records.services import record_erase


class ReadOnlyAdmin(RoleAdminMixin, admin.ModelAdmin):
    """Viewable by the hospital's admins; nothing is added, changed or deleted here."""

    def has_add_permission(self, request, *args) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class PatientAdmin(ReadOnlyAdmin):
    """Pseudonyms and dates only: names and other identity fields are ciphertext
    and are deliberately not decrypted here (the admin list is not a clinical view)."""

    list_display = ["pseudonym", "created_at"]
    search_fields = ["=pseudonym"]
    ordering = ["-created_at"]
    fields = readonly_fields = [
        "pseudonym",
        "former_pseudonyms",
        "kek_version",
        "key_id",
        "identity_tx_hash",
        "created_at",
    ]


class EraseForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        max_length=2000,
        help_text="Recorded with the erasure and put on the chain's audit trail.",
    )

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise ValidationError("Say why these records are erased.")
        return reason


class RecordAdmin(ReadOnlyAdmin):
    list_display = ["id", "patient_pseudonym", "created_at", "category_list", "erased_at"]
    list_filter = [("erased_at", admin.EmptyFieldListFilter)]
    search_fields = ["=id", "=patient_pseudonym"]
    ordering = ["-created_at"]
    fields = readonly_fields = [
        "id",
        "patient_pseudonym",
        "author_pseudonym",
        "amends",
        "categories",
        "levels",
        "tx_hash",
        "created_at",
        "erased_at",
        "erased_by",
        "erasure_reason",
        "erasure_tx_hash",
    ]
    actions = ["erase_selected"]

    @admin.display(description="categories")
    def category_list(self, obj: Record) -> str:
        return ", ".join(obj.categories or [])

    def has_erase_permission(self, request) -> bool:
        return user_has_role(request.user, (Role.ADMIN,), getattr(request, "tenant", None))

    @admin.action(description="Erase selected records", permissions=["erase"])
    def erase_selected(self, request, queryset):
        if not self.has_erase_permission(request):
            raise PermissionDenied("Only a hospital admin can erase a record.")
        records = list(queryset.order_by("-created_at"))
        form = EraseForm(request.POST if request.POST.get("post") == "yes" else None)
        if form.is_bound and form.is_valid():
            reason = form.cleaned_data["reason"]
            erased, refused = 0, []
            for record in records:
                try:
                    record_erase(actor=request.user, record=record, reason=reason)
                except ValidationError as error:
                    refused.append(f"{record.id}: {' '.join(error.messages)}")
                else:
                    erased += 1
            if erased:
                self.message_user(
                    request, f"Erased {erased} record(s); their data keys are destroyed."
                )
            for problem in refused:
                self.message_user(request, f"Not erased: {problem}", level=messages.WARNING)
            return None  # back to the change list
        context = {
            **self.admin_site.each_context(request),
            "title": "Erase records: give a reason",
            "opts": self.model._meta,
            "records": records,
            "form": form,
            "action_name": "erase_selected",
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/records/erase_confirmation.html", context)


tenant_admin_site.register(Patient, PatientAdmin)
tenant_admin_site.register(Record, RecordAdmin)
