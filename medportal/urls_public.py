"""The hub's host (BASE_DOMAIN, public schema)."""

from django.urls import include, path

from chain import views as chain_views
from medportal.admin_sites import hub_admin_site
from medportal.hub import views as hub_views
from medportal.urls_common import urlpatterns as common_urlpatterns

hub_patterns = [
    path("", chain_views.dashboard, name="dashboard"),
    path("tenants/", hub_views.tenants, name="tenants"),
]

urlpatterns = [
    *common_urlpatterns,
    path("hub/", include((hub_patterns, "hub"), namespace="hub")),
    path("admin/", hub_admin_site.urls),
]

handler400 = "medportal.errors.bad_request"
handler403 = "medportal.errors.permission_denied"
handler404 = "medportal.errors.page_not_found"
handler500 = "medportal.errors.server_error"
