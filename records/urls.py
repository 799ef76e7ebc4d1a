"""Record pages at a hospital: /records/... (see records.views)."""

from django.urls import path  # noqa: F401

app_name = "records"

urlpatterns: list = []
