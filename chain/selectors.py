"""Reads of the ledger: explorer pages, API, status and verification."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from django.db.models import QuerySet
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, schema_context

from chain.models import Block, ChainState
from chain.verification import ChainVerifier, blocks_with_transactions, verify_stream

MAX_PAGE = 500


def chain_state() -> ChainState:
    """The current schema's state row (a fresh one if nothing was ever applied)."""
    return ChainState.objects.filter(id=1).first() or ChainState(id=1)


def hub_height() -> int:
    """The height of the hub's canonical chain, from any schema."""
    with schema_context(get_public_schema_name()):
        return chain_state().height


def block_list(
    *, after: int | None = None, before: int | None = None, limit: int = 50
) -> QuerySet[Block]:
    """Blocks of the current schema: ascending after ``after``, else newest first."""
    limit = max(1, min(limit, MAX_PAGE))
    blocks = Block.objects.all()
    if after is not None:
        return blocks.filter(height__gt=after).order_by("height")[:limit]
    if before is not None:
        blocks = blocks.filter(height__lt=before)
    return blocks.order_by("-height")[:limit]


def block_get(*, height: int) -> Block | None:
    return Block.objects.filter(height=height).prefetch_related("transactions").first()


def block_is_verified(block: Block, state: ChainState) -> bool:
    return bool(state.last_verification_ok) and block.height <= state.last_verified_height


@dataclass
class VerificationReport:
    tenant: str
    schema: str
    ok: bool
    height: int
    head_hash: str
    first_bad_height: int | None = None
    reason: str = ""
    blocks_checked: int = 0
    transactions_checked: int = 0

    @property
    def status(self) -> str:
        return "ok" if self.ok else f"FAILED at height {self.first_bad_height}: {self.reason}"

    def as_dict(self) -> dict:
        return asdict(self)


def chain_verify_schema(
    *,
    schema_name: str,
    tenant_slug: str | None = None,
    incremental: bool = False,
    hash_only: bool = False,
    hub_hashes: dict[int, str] | None = None,
    hub_height: int | None = None,
    record: bool = False,
) -> VerificationReport:
    """Re-hash one copy of the chain (the hub's or a replica) end to end, streaming.

    ``incremental`` starts after the last verified height (the beat task);
    ``hash_only`` skips signature checks. For a replica, pass the hub's height so
    the head can be compared with the hub's block at the same height.
    """
    slug = tenant_slug or ("hub" if schema_name == get_public_schema_name() else schema_name)
    with schema_context(schema_name):
        state = chain_state()
        options = {"check_signatures": not hash_only, "check_transaction_signatures": not hash_only}
        start_after = -1
        if incremental and state.last_verification_ok and state.last_verified_height >= 0:
            boundary = Block.objects.filter(height=state.last_verified_height).first()
            if boundary is not None and boundary.hash == state.last_verified_hash:
                start_after = state.last_verified_height
        if start_after >= 0:
            verifier = ChainVerifier.resume(
                height=start_after, previous_hash=state.last_verified_hash, **options
            )
        else:
            verifier = ChainVerifier(**options)
        last_good, failure = verify_stream(verifier, blocks_with_transactions(after=start_after))
        height = last_good.height if last_good else start_after
        head_hash = (
            last_good.hash if last_good else (state.last_verified_hash if start_after >= 0 else "")
        )
        report = VerificationReport(
            tenant=slug,
            schema=schema_name,
            ok=failure is None,
            height=height,
            head_hash=head_hash,
            blocks_checked=verifier.blocks_checked,
            transactions_checked=verifier.transactions_checked,
        )
        if failure is not None:
            report.first_bad_height, report.reason = failure.height, failure.reason
        elif height < state.height:
            report.ok, report.first_bad_height = False, height + 1
            report.reason = f"chain truncated: it ends at {height}, its head was {state.height}"
        elif hub_height is not None and height > hub_height:
            report.ok, report.first_bad_height = False, hub_height + 1
            report.reason = f"replica is ahead of the hub (hub ends at {hub_height})"
        elif hub_hashes is not None and height >= 0 and hub_hashes.get(height) != head_hash:
            report.ok, report.first_bad_height = False, height
            report.reason = "head differs from the hub's block at the same height"
        if record:
            _record(report, state)
    return report


def _record(report: VerificationReport, state: ChainState) -> None:
    values = {
        "last_verified_at": timezone.now(),
        "last_verification_ok": report.ok,
        "last_verification_error": "" if report.ok else report.status,
    }
    if report.ok:
        values.update(last_verified_height=report.height, last_verified_hash=report.head_hash)
    ChainState.objects.update_or_create(id=1, defaults=values)


def _hub_hashes_at(heights: set[int]) -> dict[int, str]:
    with schema_context(get_public_schema_name()):
        return dict(Block.objects.filter(height__in=heights).values_list("height", "hash"))


def chain_verify_all(
    *,
    only: str | None = None,
    incremental: bool = False,
    hash_only: bool = False,
    record: bool = False,
) -> list[VerificationReport]:
    """The hub's chain, then each replica (or only tenant ``only``)."""
    from medportal.tenants.selectors import tenant_list_members

    hub = chain_verify_schema(
        schema_name=get_public_schema_name(),
        incremental=incremental,
        hash_only=hash_only,
        record=record,
    )
    reports = [hub]
    tenants = [t for t in tenant_list_members() if only is None or t.slug == only]
    for tenant in tenants:
        with schema_context(tenant.schema_name):
            replica_height = chain_state().height
        reports.append(
            chain_verify_schema(
                schema_name=tenant.schema_name,
                tenant_slug=tenant.slug,
                incremental=incremental,
                hash_only=hash_only,
                record=record,
                hub_height=hub.height if hub.ok else None,
                hub_hashes=_hub_hashes_at({replica_height}),
            )
        )
    return reports


@dataclass
class ReplicaStatus:
    slug: str
    kind: str
    height: int
    head_hash: str
    behind: int
    last_delivery_at: datetime | None
    last_verified_at: datetime | None
    last_verification: str

    def as_dict(self) -> dict:
        data = asdict(self)
        for key in ("last_delivery_at", "last_verified_at"):
            data[key] = data[key].isoformat() if data[key] else None
        return data


def _verification_text(state: ChainState) -> str:
    if state.last_verification_ok is None:
        return "never"
    return "ok" if state.last_verification_ok else state.last_verification_error or "failed"


def chain_status(*, only: str | None = None) -> list[ReplicaStatus]:
    """Per tenant (hub first): height, head, lag behind the hub, delivery and
    verification times."""
    from medportal.tenants.selectors import tenant_list

    with schema_context(get_public_schema_name()):
        hub_height = chain_state().height
    statuses = []
    for tenant in tenant_list():
        if only is not None and tenant.slug != only:
            continue
        with schema_context(tenant.schema_name):
            state = chain_state()
        statuses.append(
            ReplicaStatus(
                slug=tenant.slug,
                kind=tenant.kind,
                height=state.height,
                head_hash=state.head_hash,
                behind=max(0, hub_height - state.height),
                last_delivery_at=state.last_delivery_at,
                last_verified_at=state.last_verified_at,
                last_verification=_verification_text(state),
            )
        )
    statuses.sort(key=lambda status: (status.kind != "hub", status.slug))
    return statuses
