"""URLs every host answers, hub and tenants alike."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.authtoken.views import obtain_auth_token

from accounts import views as account_views
from accounts.apis import MeApi
from chain.apis import ChainBlockDetailApi, ChainBlockListApi, ChainStatusApi
from medportal.health import healthz

api_v1 = [
    path("me", MeApi.as_view(), name="me"),
    # Exchange a username and password for an API token (lockout applies).
    path("auth/token", obtain_auth_token, name="token"),
    path("chain/blocks", ChainBlockListApi.as_view(), name="chain-blocks"),
    path("chain/blocks/<int:height>", ChainBlockDetailApi.as_view(), name="chain-block"),
    path("chain/status", ChainStatusApi.as_view(), name="chain-status"),
]


def build_urlpatterns(*, api_extra: list | tuple = (), pages_extra: list | tuple = ()) -> list:
    """The common URLs plus a host kind's own pages and API routes (tenant hosts
    add records; the hub has none, so its API never reaches a tenant table)."""
    return [
        path("", account_views.home, name="home"),
        path("healthz", healthz, name="healthz"),
        path("accounts/", include("accounts.urls")),
        path("chain/", include("chain.urls")),
        *pages_extra,
        path("api/v1/", include(([*api_v1, *api_extra], "api"), namespace="api")),
        path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
        path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    ]


urlpatterns = build_urlpatterns()
