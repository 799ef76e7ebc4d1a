"""Record API routes, added under /api/v1/ on hospital hosts (see records.apis)."""

from django.urls import path  # noqa: F401

api_urlpatterns: list = []
