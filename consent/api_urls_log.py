"""Consent API routes: the access log (see consent.api_urls)."""

from django.urls import path

from consent.apis_log import AccessLogListApi

api_urlpatterns: list = [
    path("access-log/", AccessLogListApi.as_view(), name="access-log"),
]
