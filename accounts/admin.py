from __future__ import annotations

from axes.models import AccessAttempt
from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm

from accounts.models import User
from medportal.admin_sites import RoleAdminMixin, hub_admin_site, tenant_admin_site


class UserCreationForm(AdminUserCreationForm):
    class Meta(AdminUserCreationForm.Meta):
        model = User
        fields = ("username", "role", "first_name", "last_name", "email")


class UserChangeFormForRole(UserChangeForm):
    class Meta(UserChangeForm.Meta):
        model = User


class UserAdmin(RoleAdminMixin, DjangoUserAdmin):
    """People of this tenant. Access comes from the role, so Django's superuser,
    group and permission fields are left out; people are deactivated, not
    deleted, so that what they did stays attributable."""

    form = UserChangeFormForRole
    add_form = UserCreationForm
    list_display = ["username", "first_name", "last_name", "role", "is_active", "last_login"]
    list_filter = ["role", "is_active"]
    search_fields = ["username", "first_name", "last_name", "email"]
    readonly_fields = ["last_login", "date_joined"]
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        ("Person", {"fields": ("first_name", "last_name", "email")}),
        ("Access", {"fields": ("role", "is_active", "must_change_password")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (
            None,
            {
                "fields": (
                    "username",
                    "role",
                    "first_name",
                    "last_name",
                    "email",
                    "password1",
                    "password2",
                )
            },
        ),
    )

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change) -> None:
        from accounts.roles import ADMIN_SITE_ROLES

        obj.is_staff = obj.role in ADMIN_SITE_ROLES
        if not change:
            obj.must_change_password = True
        super().save_model(request, obj, form, change)


class AccessAttemptAdmin(RoleAdminMixin, admin.ModelAdmin):
    """Sign-in lockouts; delete a row to unlock that person."""

    list_display = ["username", "ip_address", "failures_since_start", "attempt_time"]
    search_fields = ["username", "ip_address"]
    # GET and POST data are left out: they may carry what a person typed.
    fields = readonly_fields = [
        "username",
        "ip_address",
        "user_agent",
        "failures_since_start",
        "attempt_time",
        "path_info",
    ]

    def has_add_permission(self, request, *args) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


for site in (hub_admin_site, tenant_admin_site):
    site.register(User, UserAdmin)
    site.register(AccessAttempt, AccessAttemptAdmin)
