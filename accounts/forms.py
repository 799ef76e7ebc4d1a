from __future__ import annotations

from django import forms
from django.contrib.auth.password_validation import password_validators_help_text_html

from accounts.roles import CREATABLE_ROLES, Role


class PersonCreateForm(forms.Form):
    role = forms.ChoiceField(choices=())
    first_name = forms.CharField(max_length=150)
    last_name = forms.CharField(max_length=150)
    username = forms.CharField(
        max_length=150, help_text="What they will type to sign in, e.g. j.smith."
    )
    email = forms.EmailField(required=False, help_text="Optional; a welcome e-mail goes there.")
    password = forms.CharField(
        label="Temporary password",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="They must change it when they first sign in. "
        + password_validators_help_text_html(),
        strip=False,
    )

    def __init__(self, *args, actor, **kwargs):
        super().__init__(*args, **kwargs)
        # Patients are registered with their encrypted profile on the records
        # pages ("New patient"), not here: an account alone has no pseudonym.
        self.fields["role"].choices = [
            (role, Role(role).label)
            for role in CREATABLE_ROLES.get(actor.role, ())
            if role != Role.PATIENT
        ]
