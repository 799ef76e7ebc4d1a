"""Research requests as the hub keeps them (public schema).

A request is filed by a research organisation, answered by each hospital
(approve or decline, then release), and its status changes are ``request``
transactions on the chain. What the hub keeps here is what every party may
see: the request's text, the hospitals' answers and the released files'
hashes and totals. Nothing about a hospital's patients is here: who matched,
who opted in and who declined stays inside each hospital (``consent``'s
``ResearchInvitation``), and the datasets are stored encrypted for the
organisation.
"""

from __future__ import annotations

import uuid

from django.db import models

from medportal.tenants.models import Tenant


class Answer(models.TextChoices):
    ROWS = "rows", "De-identified rows"
    AGGREGATE = "aggregate", "Aggregate counts only"


class RequestStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    OPENED = "opened", "Open"
    CLOSED = "closed", "Closed"
    WITHDRAWN = "withdrawn", "Withdrawn"


class ParticipationStatus(models.TextChoices):
    APPROVED = "approved", "Approved"
    DECLINED = "declined", "Declined"
    RELEASED = "released", "Released"


class ResearchRequest(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organisation = models.ForeignKey(
        Tenant, on_delete=models.PROTECT, related_name="research_requests"
    )
    # The researcher who filed it (a user id in the organisation's schema).
    created_by_id = models.PositiveIntegerField()
    created_by_name = models.CharField(max_length=200)
    title = models.CharField(max_length=200)
    purpose = models.TextField()
    investigator = models.CharField(max_length=200)
    ethics_reference = models.CharField(max_length=100)
    ethics_document_sha256 = models.CharField(max_length=64, blank=True)
    ethics_document_name = models.CharField(max_length=200, blank=True)
    categories = models.JSONField(default=list)
    # {"codes": [...], "age_min": int|None, "age_max": int|None, "sex": "",
    #  "period_from": "YYYY-MM-DD"|None, "period_to": "YYYY-MM-DD"|None}
    criteria = models.JSONField(default=dict)
    answer = models.CharField(max_length=16, choices=Answer.choices, default=Answer.ROWS)
    k = models.PositiveSmallIntegerField(default=5)
    expires_at = models.DateTimeField()
    status = models.CharField(
        max_length=16, choices=RequestStatus.choices, default=RequestStatus.DRAFT
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    tx_hash = models.CharField(max_length=64, blank=True)
    # Aggregate requests: the share holders, fixed when the first hospital releases
    # (hospital slugs in x order; the hub holds the last share).
    aggregate_parties = models.JSONField(default=list, blank=True)
    # Aggregate requests: the reconstructed sums, small cells shown as "< k".
    aggregate_result = models.JSONField(null=True, blank=True)
    aggregate_sha256 = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=models.Q(k__gte=2), name="research_k_at_least_2"),
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def is_aggregate(self) -> bool:
        return self.answer == Answer.AGGREGATE


class Participation(models.Model):
    """One hospital's answer to a request."""

    request = models.ForeignKey(
        ResearchRequest, on_delete=models.CASCADE, related_name="participations"
    )
    hospital = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=16, choices=ParticipationStatus.choices)
    reason = models.TextField(blank=True)
    decided_by_name = models.CharField(max_length=200)
    decided_at = models.DateTimeField()
    tx_hash = models.CharField(max_length=64, blank=True)
    # Set while a release is being prepared in the background (a task).
    release_started_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["hospital__name"]
        constraints = [
            models.UniqueConstraint(fields=["request", "hospital"], name="research_one_answer"),
        ]

    def __str__(self) -> str:
        return f"{self.hospital} {self.status} {self.request}"


class Release(models.Model):
    """One hospital's released dataset: an archive encrypted for the organisation
    (HPKE), stored content-addressed under ``sha256``, which is on the chain."""

    request = models.ForeignKey(ResearchRequest, on_delete=models.CASCADE, related_name="releases")
    hospital = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    sha256 = models.CharField(max_length=64)
    size = models.PositiveIntegerField()
    rows = models.PositiveIntegerField()
    suppressed = models.PositiveIntegerField()
    released_by_name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    tx_hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"release {self.sha256[:12]} of {self.request} by {self.hospital}"


class AggregateShare(models.Model):
    """One hospital's Shamir shares of its counts for one share holder, encrypted
    for that holder (HPKE): no other party, the hub included, can read them."""

    request = models.ForeignKey(
        ResearchRequest, on_delete=models.CASCADE, related_name="aggregate_shares"
    )
    sender = models.CharField(max_length=40)  # a hospital's slug
    holder = models.CharField(max_length=40)  # a hospital's slug, or the hub's
    sealed = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["request", "sender", "holder"], name="research_one_share_per_pair"
            ),
        ]

    def __str__(self) -> str:
        return f"shares of {self.sender} for {self.holder}"


class AggregateSum(models.Model):
    """A holder's sum of the shares it received, one per cell: published, since a
    sum of shares from every hospital reveals none of them."""

    request = models.ForeignKey(
        ResearchRequest, on_delete=models.CASCADE, related_name="aggregate_sums"
    )
    holder = models.CharField(max_length=40)
    x = models.PositiveSmallIntegerField()
    sums = models.JSONField()  # {cell: int as string}
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["request", "holder"], name="research_one_sum"),
        ]

    def __str__(self) -> str:
        return f"sums of {self.holder}"
