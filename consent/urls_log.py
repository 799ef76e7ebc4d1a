"""Consent pages: log (see consent.urls)."""

urlpatterns: list = []
