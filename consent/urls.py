"""Consent pages at a hospital: /consent/... Each area keeps its own module."""

from consent.urls_emergency import urlpatterns as emergency_urls
from consent.urls_log import urlpatterns as log_urls
from consent.urls_sharing import urlpatterns as sharing_urls

app_name = "consent"

urlpatterns = [*sharing_urls, *log_urls, *emergency_urls]
