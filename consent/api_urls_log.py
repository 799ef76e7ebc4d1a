"""Consent API routes: log (see consent.api_urls)."""

api_urlpatterns: list = []
