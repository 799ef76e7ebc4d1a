from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse_lazy

from accounts.forms import PersonCreateForm
from accounts.navigation import navigation_for
from accounts.permissions import role_required
from accounts.roles import Role
from accounts.selectors import people_list_for_user
from accounts.services import user_create, user_password_change


class LoginView(auth_views.LoginView):
    template_name = "registration/login.html"
    redirect_authenticated_user = True


class LogoutView(auth_views.LogoutView):
    pass


class PasswordChangeView(auth_views.PasswordChangeView):
    template_name = "registration/password_change.html"
    success_url = reverse_lazy("home")

    def form_valid(self, form):
        user_password_change(
            user=self.request.user,
            new_password=form.cleaned_data["new_password1"],
            old_password=form.cleaned_data["old_password"],
        )
        update_session_auth_hash(self.request, self.request.user)
        messages.success(self.request, "Your password was changed.")
        return redirect(self.get_success_url())


@login_required
def home(request):
    """One home page per role: what this person can do next."""
    user = request.user
    actions = [item for item in navigation_for(user, request.tenant) if item.url_name != "home"]
    return render(
        request,
        f"accounts/home_{user.role}.html",
        {"actions": actions, "role_label": user.get_role_display()},
    )


@role_required(Role.ADMIN, Role.DOCTOR)
def people(request):
    role = request.GET.get("role") or None
    if role is not None and role not in Role.values:
        role = None
    return render(
        request,
        "accounts/people.html",
        {
            "people": people_list_for_user(user=request.user, role=role),
            "role_filter": role,
            "roles": [
                (value, label)
                for value, label in Role.choices
                if value in (Role.ADMIN, Role.DOCTOR, Role.PATIENT)
            ],
        },
    )


@role_required(Role.ADMIN, Role.DOCTOR)
def person_create(request):
    form = PersonCreateForm(request.POST or None, actor=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            person = user_create(actor=request.user, **form.cleaned_data)
        except ValidationError as error:
            for field, errors in error.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
        except PermissionDenied as error:
            form.add_error("role", str(error))
        else:
            messages.success(
                request, f"{person.display_name} was added as {person.get_role_display().lower()}."
            )
            return redirect("accounts:people")
    status = 400 if request.method == "POST" else 200
    return render(request, "accounts/person_create.html", {"form": form}, status=status)
