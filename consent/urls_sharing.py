"""Consent pages: sharing and access requests (see consent.urls, consent.views_sharing)."""

from django.urls import path

from consent import views_sharing as views

urlpatterns: list = [
    path("sharing/", views.sharing, name="sharing"),
    path("sharing/revoke/", views.sharing_revoke_view, name="sharing_revoke"),
    path(
        "sharing/requests/<uuid:request_id>/answer/",
        views.request_answer,
        name="request_answer",
    ),
    path("receipts/<str:tx_hash>/", views.receipt, name="receipt"),
    path("patients/<uuid:patient_id>/request/", views.request_new, name="request_new"),
    path("requests/", views.requests_list, name="requests"),
]
