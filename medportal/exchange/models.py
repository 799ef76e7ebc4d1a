"""What the hub's exchange service keeps: short-lived patient link codes.

Public schema only. A row holds no PHI: the HMAC of the code (never the code),
which hospital issued it and for which pseudonym.
"""

from __future__ import annotations

from django.db import models


class LinkCode(models.Model):
    code_digest = models.CharField(max_length=64, unique=True)
    origin = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    # The Patient row (id) at the origin hospital, and its pseudonym.
    patient_id = models.UUIDField()
    pseudonym = models.CharField(max_length=64)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    used_by = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )

    class Meta:
        indexes = [models.Index(fields=["expires_at"], name="exchange_link_expiry")]

    def __str__(self) -> str:
        return f"link code from {self.origin_id} (expires {self.expires_at:%Y-%m-%d %H:%M})"
