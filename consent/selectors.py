"""Reads of the access log: verification, proofs of inclusion, and the log as a
patient ("Who saw my records") or a hospital's staff read it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import islice, pairwise

from django.db import connection
from django.db.models import Q
from django.http import Http404
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context

from accounts.permissions import user_has_role
from accounts.roles import STAFF_ROLES
from chain.encoding import GENESIS_PREVIOUS_HASH
from chain.merkle import inclusion_proof, merkle_root
from chain.models import PendingTransaction, Transaction, TransactionKind
from consent.models import HASHED_FIELDS, AccessLogAnchor, AccessLogEntry, access_log_entry_hash
from medportal.tenants.models import Tenant

CHUNK_SIZE = 2000


@dataclass
class AnchorProblem:
    first_entry: int
    last_entry: int
    reason: str

    def __str__(self) -> str:
        return f"anchor {self.first_entry}-{self.last_entry}: {self.reason}"


@dataclass
class AccessLogVerification:
    """``first_bad_entry`` is the first entry whose hash or link is wrong;
    ``anchor_problems`` every anchored range whose entries no longer give the
    root recorded here and on the chain (a rewrite that re-hashed every later
    entry shows up only there)."""

    tenant: str
    ok: bool = True
    entries_checked: int = 0
    anchors_checked: int = 0
    first_bad_entry: int | None = None
    reason: str = ""
    anchor_problems: list[AnchorProblem] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.ok:
            return "ok"
        if self.first_bad_entry is not None:
            return f"FAILED at entry {self.first_bad_entry}: {self.reason}"
        return f"FAILED: {self.reason}"

    def fail(self, entry_id: int | None, reason: str) -> None:
        self.ok = False
        if not self.reason:
            self.first_bad_entry = entry_id
            self.reason = reason


def chain_anchor_transactions(tx_hashes: Iterable[str]) -> dict[str, tuple[dict, int | None]]:
    """tx hash -> (payload, block height or None) of ``anchor`` transactions, from
    the current tenant's replica, then the hub's chain, then the hub's pending
    transactions (accepted, not sealed yet). Call inside the tenant's schema."""
    wanted = set(tx_hashes)
    found = {
        row[0]: (row[1], row[2])
        for row in Transaction.objects.filter(
            hash__in=wanted, kind=TransactionKind.ANCHOR
        ).values_list("hash", "payload", "block__height")
    }
    missing = wanted - set(found)
    if missing:
        with schema_context(get_public_schema_name()):
            for tx_hash, payload, height in Transaction.objects.filter(
                hash__in=missing, kind=TransactionKind.ANCHOR
            ).values_list("hash", "payload", "block__height"):
                found[tx_hash] = (payload, height)
            for tx_hash, payload in PendingTransaction.objects.filter(
                hash__in=missing - set(found), kind=TransactionKind.ANCHOR
            ).values_list("hash", "payload"):
                found[tx_hash] = (payload, None)
    return found


def _chunks(items: list, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _check_anchor(
    result: AccessLogVerification,
    anchor: tuple[int, int, str, str],
    hashes: list[str],
    on_chain: dict[str, tuple[dict, int | None]],
) -> None:
    first_entry, last_entry, root, tx_hash = anchor
    result.anchors_checked += 1
    reasons = []
    recomputed = merkle_root(hashes)
    if recomputed != root:
        reasons.append("the entries do not give the anchored root")
    pointer = on_chain.get(tx_hash)
    expected = {
        "tenant": result.tenant,
        "first_entry": first_entry,
        "last_entry": last_entry,
        "root": recomputed,
    }
    if pointer is None:
        reasons.append(f"anchor transaction {tx_hash} is not on the chain")
    elif pointer[0] != expected:
        reasons.append(f"the entries do not match anchor transaction {tx_hash}")
    if reasons:
        problem = AnchorProblem(first_entry, last_entry, "; ".join(reasons))
        result.anchor_problems.append(problem)
        result.fail(None, str(problem))


def access_log_verify(*, tenant: Tenant) -> AccessLogVerification:
    """Re-hash every entry of ``tenant``'s access log, follow the ``previous_hash``
    links, and check every anchored range against its anchor and the chain.

    Links, not ids, prove that nothing was removed: a rolled-back append leaves a
    gap in the ids. A changed entry fails its own hash; a deleted, inserted or
    moved one breaks a link (or, if every later hash was recomputed, an anchor).
    Entries after the last anchor can lose their tail unnoticed until anchored.
    """
    result = AccessLogVerification(tenant=tenant.slug)
    with tenant_context(tenant):
        anchors = list(
            AccessLogAnchor.objects.order_by("first_entry").values_list(
                "first_entry", "last_entry", "root", "tx_hash"
            )
        )
        on_chain: dict[str, tuple[dict, int | None]] = {}
        for chunk in _chunks([anchor[3] for anchor in anchors], CHUNK_SIZE):
            on_chain.update(chain_anchor_transactions(chunk))
        for earlier, later in pairwise(anchors):
            if later[0] <= earlier[1]:
                result.fail(
                    later[0], f"anchors {earlier[0]}-{earlier[1]} and {later[0]}-{later[1]} overlap"
                )

        position = 0  # the anchor the next entries may fall in
        anchored_hashes: list[str] = []
        previous_hash = GENESIS_PREVIOUS_HASH
        rows = AccessLogEntry.objects.order_by("id").values_list(*HASHED_FIELDS, "hash")
        for row in rows.iterator(chunk_size=CHUNK_SIZE):
            values = dict(zip(HASHED_FIELDS, row, strict=False))
            entry_id, stored_hash = values["id"], row[-1]
            while position < len(anchors) and anchors[position][1] < entry_id:
                _check_anchor(result, anchors[position], anchored_hashes, on_chain)
                anchored_hashes = []
                position += 1
            recomputed = access_log_entry_hash(values)
            if position < len(anchors) and anchors[position][0] <= entry_id:
                # What the entry says now, not the hash stored beside it: a
                # changed entry is then reported against its anchor as well.
                anchored_hashes.append(recomputed)
            result.entries_checked += 1
            if recomputed != stored_hash:
                result.fail(entry_id, "entry hash does not match its contents")
            if values["previous_hash"] != previous_hash:
                if previous_hash == GENESIS_PREVIOUS_HASH:
                    reason = "the first entry does not start the chain (entries before it removed)"
                else:
                    reason = (
                        "previous_hash does not link to the entry before it "
                        "(an entry removed, inserted or moved)"
                    )
                result.fail(entry_id, reason)
            previous_hash = stored_hash
        for anchor in anchors[position:]:
            _check_anchor(result, anchor, anchored_hashes, on_chain)
            anchored_hashes = []
    return result


@dataclass(frozen=True)
class InclusionProof:
    """Entry ``entry_id`` is leaf ``index`` of ``size`` in the anchored batch
    whose root is on the chain in transaction ``tx_hash``; check it with
    ``chain.merkle.verify_inclusion(entry_hash, index, size, path, root)``."""

    entry_id: int
    entry_hash: str
    first_entry: int
    last_entry: int
    index: int
    size: int
    path: list[str]
    root: str
    tx_hash: str
    block_height: int | None  # None while the transaction waits to be sealed


def access_log_inclusion_proof(*, tenant: Tenant, entry_id: int) -> InclusionProof | None:
    """The proof that an entry is in an anchored batch; None when the entry does
    not exist or is not anchored yet."""
    with tenant_context(tenant):
        anchor = AccessLogAnchor.objects.filter(
            first_entry__lte=entry_id, last_entry__gte=entry_id
        ).first()
        if anchor is None:
            return None
        ids_and_hashes = list(
            AccessLogEntry.objects.filter(id__range=(anchor.first_entry, anchor.last_entry))
            .order_by("id")
            .values_list("id", "hash")
        )
        ids = [entry for entry, _ in ids_and_hashes]
        if entry_id not in ids:
            return None
        hashes = [entry_hash for _, entry_hash in ids_and_hashes]
        index = ids.index(entry_id)
        pointer = chain_anchor_transactions([anchor.tx_hash]).get(anchor.tx_hash)
    return InclusionProof(
        entry_id=entry_id,
        entry_hash=hashes[index],
        first_entry=anchor.first_entry,
        last_entry=anchor.last_entry,
        index=index,
        size=len(hashes),
        path=inclusion_proof(hashes, index),
        root=anchor.root,
        tx_hash=anchor.tx_hash,
        block_height=pointer[1] if pointer else None,
    )


# --- Who saw the records: the access log as the patient and staff read it ------------

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
CURSOR_SEPARATOR = "~"

# Reasons (see consent.policy) in the patient's words. A reason may list several,
# joined with ";" (sections of one record allowed by different rules).
REASON_WORDS = {
    "own-record": "you",
    "default:author": "the doctor who wrote it",
    "default:own-hospital": "staff of the hospital that wrote it",
    "exchange": "a request through the hub's exchange",
    "deny:no-grant": "refused: no consent",
    "deny:very-restricted-needs-grant": "refused: very restricted sections need your consent",
    "deny:not-own-record": "refused: not the reader's own record",
    "deny:not-own-profile": "refused: not the reader's own profile",
    "deny:role": "refused: the reader's role may not read records",
}
SHORT_HASH = 12


def _one_reason_in_words(reason: str) -> str:
    if reason in REASON_WORDS:
        return REASON_WORDS[reason]
    rule, _, argument = reason.partition(":")
    if rule == "grant" and argument:
        return f"your consent (transaction {argument[:SHORT_HASH]})"
    if rule == "emergency" and argument:
        return f"declared emergency (transaction {argument[:SHORT_HASH]})"
    if rule == "deny":
        return "refused"
    return reason or "no reason recorded"


def access_log_reason_in_words(reason: str) -> str:
    """``"grant:ab12…;default:author"`` -> ``"your consent (transaction ab12…);
    the doctor who wrote it"``."""
    words = []
    for part in reason.split(";"):
        phrase = _one_reason_in_words(part.strip())
        if phrase not in words:
            words.append(phrase)
    return "; ".join(words)


def _reader_in_words(*, reader_name: str, reader_role: str, reason: str, for_patient: bool) -> str:
    # A patient reader is logged as "the patient" (no name leaves their hospital):
    # to the patient it is either themself (their own record) or someone else
    # refused at theirs.
    if not for_patient or reader_role != "patient":
        return reader_name
    if all(part.strip() == "own-record" for part in reason.split(";")):
        return "You"
    return "Another patient"


def _section_label(name: str) -> str:
    from records.categories import Level

    return Level(name).label if name in Level.values else name.replace("_", " ")


def _role_label(role: str) -> str:
    from accounts.roles import Role

    return Role(role).label if role in Role.values else role


@dataclass(frozen=True)
class AccessLogFilters:
    """What a reader of the log narrows it to. ``hospital`` is the hospital that
    holds the records (and the log entry), ``reader_hospital`` the reader's.
    ``since`` and ``until`` are dates, both inclusive, in the current time zone.
    ``before`` is the cursor of the previous page (``AccessLogPage.next_before``).
    """

    decision: str = ""
    hospital: str = ""
    reader_hospital: str = ""
    emergencies_only: bool = False
    since: date | None = None
    until: date | None = None
    before: str = ""
    limit: int = PAGE_SIZE


@dataclass(frozen=True)
class LogCursor:
    created_at: datetime
    hospital: str
    entry_id: int

    def __str__(self) -> str:
        when = self.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return CURSOR_SEPARATOR.join((when, self.hospital, str(self.entry_id)))

    @classmethod
    def parse(cls, text: str) -> LogCursor:
        """ValueError unless ``text`` is a cursor this module wrote."""
        parts = text.split(CURSOR_SEPARATOR)
        if len(parts) != 3 or not parts[1]:
            raise ValueError("not a page cursor")
        when = datetime.strptime(parts[0], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        return cls(when, parts[1], int(parts[2]))


@dataclass(frozen=True)
class LogRow:
    """One access-log entry as a reader of the log sees it."""

    entry_id: int
    hospital: str  # the hospital that holds the record and this entry
    hospital_name: str
    created_at: datetime
    reader_name: str
    reader_role: str
    reader_role_label: str
    reader_hospital: str
    reader_hospital_name: str
    patient_pseudonym: str
    record_id: str
    sections: list[str]
    sections_text: str
    purpose: str
    purpose_label: str
    decision: str
    reason: str
    reason_text: str
    is_emergency: bool
    is_anchored: bool
    entry_hash: str

    @property
    def is_denied(self) -> bool:
        return self.decision == "deny"

    @property
    def cursor(self) -> LogCursor:
        return LogCursor(self.created_at, self.hospital, self.entry_id)

    @property
    def sort_key(self) -> tuple[datetime, str, int]:
        return (self.created_at, self.hospital, self.entry_id)


@dataclass(frozen=True)
class AccessLogPage:
    """Newest first; ``next_before`` is the cursor of the next (older) page, or ""."""

    rows: list[LogRow]
    next_before: str = ""
    hospitals: list[tuple[str, str]] = field(default_factory=list)  # (slug, name) searched


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def _filters_query(*, hospital_slug: str, filters: AccessLogFilters) -> Q:
    """The filters and the cursor as one condition on this hospital's entries.
    Pages are ordered by (created_at, hospital slug, id), newest first, so a page
    boundary between equal timestamps at two hospitals loses nothing."""
    query = Q()
    if filters.decision:
        query &= Q(decision=filters.decision)
    if filters.reader_hospital:
        query &= Q(reader_tenant=filters.reader_hospital)
    if filters.emergencies_only:
        query &= Q(is_emergency=True)
    if filters.since:
        query &= Q(created_at__gte=_day_start(filters.since))
    if filters.until:
        query &= Q(created_at__lt=_day_start(filters.until + timedelta(days=1)))
    if filters.before:
        cursor = LogCursor.parse(filters.before)
        if hospital_slug < cursor.hospital:
            query &= Q(created_at__lte=cursor.created_at)
        elif hospital_slug == cursor.hospital:
            query &= Q(created_at__lt=cursor.created_at) | Q(
                created_at=cursor.created_at, id__lt=cursor.entry_id
            )
        else:
            query &= Q(created_at__lt=cursor.created_at)
    return query


def access_log_rows_here(
    *,
    hospital: Tenant,
    pseudonyms: Iterable[str] | None,
    filters: AccessLogFilters,
    for_patient: bool,
) -> list[LogRow]:
    """Up to ``filters.limit + 1`` entries of the current schema's log (which must
    be ``hospital``'s), newest first: about ``pseudonyms`` (None: every patient).
    The caller enters the schema and decides who may ask."""
    entries = AccessLogEntry.objects.filter(
        _filters_query(hospital_slug=hospital.slug, filters=filters)
    )
    if pseudonyms is not None:
        entries = entries.filter(patient_pseudonym__in=list(pseudonyms))
    entries = list(entries.order_by("-created_at", "-id")[: filters.limit + 1])
    return access_log_rows(hospital=hospital, entries=entries, for_patient=for_patient)


def access_log_rows(
    *, hospital: Tenant, entries: list[AccessLogEntry], for_patient: bool
) -> list[LogRow]:
    """``entries`` of ``hospital``'s log (read in its schema, which is current) as
    rows, with whether each is anchored yet; ``for_patient`` words the reader
    as the patient sees them."""
    if not entries:
        return []
    ids = [entry.id for entry in entries]
    anchored = list(
        AccessLogAnchor.objects.filter(
            first_entry__lte=max(ids), last_entry__gte=min(ids)
        ).values_list("first_entry", "last_entry")
    )
    return [
        LogRow(
            entry_id=entry.id,
            hospital=hospital.slug,
            hospital_name=hospital.name,
            created_at=entry.created_at,
            reader_name=_reader_in_words(
                reader_name=entry.reader_name,
                reader_role=entry.reader_role,
                reason=entry.reason,
                for_patient=for_patient,
            ),
            reader_role=entry.reader_role,
            reader_role_label=_role_label(entry.reader_role),
            reader_hospital=entry.reader_tenant,
            reader_hospital_name=entry.reader_tenant_name,
            patient_pseudonym=entry.patient_pseudonym,
            record_id=entry.record_id,
            sections=list(entry.sections),
            sections_text=", ".join(_section_label(name) for name in entry.sections),
            purpose=entry.purpose,
            purpose_label=entry.get_purpose_display(),
            decision=entry.decision,
            reason=entry.reason,
            reason_text=access_log_reason_in_words(entry.reason),
            is_emergency=entry.is_emergency,
            is_anchored=any(first <= entry.id <= last for first, last in anchored),
            entry_hash=entry.hash,
        )
        for entry in entries
    ]


def access_log_page(
    rows: Iterable[LogRow], *, filters: AccessLogFilters, hospitals: Iterable[Tenant] = ()
) -> AccessLogPage:
    """Merge rows from several hospitals (each at most ``limit + 1``) into one page."""
    merged = sorted(rows, key=lambda row: row.sort_key, reverse=True)
    page = merged[: filters.limit]
    next_before = str(page[-1].cursor) if len(merged) > filters.limit else ""
    return AccessLogPage(
        rows=page,
        next_before=next_before,
        hospitals=[(tenant.slug, tenant.name) for tenant in hospitals],
    )


def access_log_for_patient_account(*, user, filters: AccessLogFilters) -> AccessLogPage:
    """The signed-in patient's log, merged from every hospital that may hold
    entries about them (through the hub's exchange); 404 for anyone else."""
    from medportal.exchange.services import access_log_for_patient
    from records.selectors import patient_for_account

    patient = patient_for_account(user=user)
    return access_log_for_patient(
        requester_slug=connection.tenant.slug, pseudonym=patient.pseudonym, filters=filters
    )


def access_log_hospitals_for_patient_account(*, user) -> list[tuple[str, str]]:
    """(slug, name) of the hospitals the signed-in patient's log is read from."""
    from medportal.exchange.services import patient_log_hospitals, patient_pseudonyms
    from records.selectors import patient_for_account

    patient = patient_for_account(user=user)
    requester_slug = connection.tenant.slug
    pseudonyms = patient_pseudonyms(requester_slug=requester_slug, pseudonym=patient.pseudonym)
    hospitals = patient_log_hospitals(requester_slug=requester_slug, pseudonyms=pseudonyms)
    return [(tenant.slug, tenant.name) for tenant in hospitals]


def access_log_for_staff(*, user, filters: AccessLogFilters, patient_id=None) -> AccessLogPage:
    """This hospital's log for its doctors and admins, optionally about one of its
    patients (404 if there is no such patient here); Http404 for anyone else."""
    from records.selectors import patient_get_for_user

    if not user_has_role(user, STAFF_ROLES):
        raise Http404("No such page.")
    hospital = connection.tenant
    pseudonyms = None
    if patient_id is not None:
        pseudonyms = patient_get_for_user(user=user, patient_id=patient_id).patient.pseudonyms
    if filters.hospital and filters.hospital != hospital.slug:
        return AccessLogPage(rows=[], hospitals=[(hospital.slug, hospital.name)])
    rows = access_log_rows_here(
        hospital=hospital, pseudonyms=pseudonyms, filters=filters, for_patient=False
    )
    return access_log_page(rows, filters=filters, hospitals=[hospital])


@dataclass(frozen=True)
class EntryProof:
    """An entry of the patient's log with its proof of inclusion (None while not
    anchored). ``is_verified``: the audit path leads from the hash of the entry's
    contents, as stored now, to the anchored root."""

    row: LogRow
    proof: InclusionProof | None
    is_verified: bool


def access_log_proof_for_patient_account(*, user, hospital_slug: str, entry_id: int) -> EntryProof:
    """One entry of the signed-in patient's own log and its proof; Http404 when the
    entry does not exist or is about someone else."""
    from chain.merkle import verify_inclusion
    from medportal.exchange.services import access_log_entry_for_patient
    from records.selectors import patient_for_account

    patient = patient_for_account(user=user)
    found = access_log_entry_for_patient(
        requester_slug=connection.tenant.slug,
        pseudonym=patient.pseudonym,
        hospital_slug=hospital_slug,
        entry_id=entry_id,
    )
    if found is None:
        raise Http404("No such entry.")
    hospital, row, content_hash = found
    proof = access_log_inclusion_proof(tenant=hospital, entry_id=entry_id)
    is_verified = proof is not None and verify_inclusion(
        content_hash, proof.index, proof.size, proof.path, proof.root
    )
    return EntryProof(row=row, proof=proof, is_verified=is_verified)
