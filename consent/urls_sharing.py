"""Consent pages: sharing (see consent.urls)."""

urlpatterns: list = []
