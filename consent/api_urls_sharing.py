"""Consent API routes: sharing (see consent.api_urls)."""

api_urlpatterns: list = []
