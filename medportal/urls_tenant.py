"""Hospital and research-organisation hosts (<slug>.BASE_DOMAIN, one schema each)."""

from django.urls import include, path

from consent.api_urls import api_urlpatterns as consent_api
from medportal.admin_sites import tenant_admin_site
from medportal.research.api_urls import api_urlpatterns as research_api
from medportal.urls_common import build_urlpatterns
from records.api_urls import api_urlpatterns as records_api

urlpatterns = [
    *build_urlpatterns(
        api_extra=[*records_api, *consent_api, *research_api],
        pages_extra=[
            path("records/", include("records.urls")),
            path("consent/", include("consent.urls")),
            path("research/", include("medportal.research.urls")),
        ],
    ),
    path("admin/", tenant_admin_site.urls),
]

handler400 = "medportal.errors.bad_request"
handler403 = "medportal.errors.permission_denied"
handler404 = "medportal.errors.page_not_found"
handler500 = "medportal.errors.server_error"
