"""Consent API routes, added under /api/v1/ on hospital hosts."""

from consent.api_urls_log import api_urlpatterns as log_api
from consent.api_urls_sharing import api_urlpatterns as sharing_api

api_urlpatterns = [*sharing_api, *log_api]
