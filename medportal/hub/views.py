from __future__ import annotations

from django.shortcuts import render

from accounts.permissions import role_required
from accounts.roles import Role
from medportal.tenants.selectors import tenant_list


@role_required(Role.OPERATOR)
def tenants(request):
    return render(request, "hub/tenants.html", {"tenants": tenant_list()})
