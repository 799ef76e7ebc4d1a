"""Consent pages: the patient's access log ("Who saw my records"), see consent.urls."""

from django.urls import path

from consent import views_log

urlpatterns = [
    path("access-log/", views_log.access_log, name="access_log"),
    path(
        "access-log/<slug:hospital_slug>/<int:entry_id>/proof/",
        views_log.access_log_proof,
        name="access_log_proof",
    ),
]
