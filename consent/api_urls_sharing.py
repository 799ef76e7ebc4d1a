"""Consent API routes: sharing and access requests (see consent.apis_sharing)."""

from django.urls import path

from consent.apis_sharing import (
    AccessRequestAnswerApi,
    AccessRequestListCreateApi,
    ConsentListCreateApi,
    ConsentRevokeApi,
)

api_urlpatterns: list = [
    path("consents/", ConsentListCreateApi.as_view(), name="consents"),
    path("consents/revoke", ConsentRevokeApi.as_view(), name="consents-revoke"),
    path("access-requests/", AccessRequestListCreateApi.as_view(), name="access-requests"),
    path(
        "access-requests/<uuid:request_id>/answer",
        AccessRequestAnswerApi.as_view(),
        name="access-request-answer",
    ),
]
