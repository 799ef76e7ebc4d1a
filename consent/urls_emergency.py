"""Consent pages: emergency (see consent.urls)."""

urlpatterns: list = []
