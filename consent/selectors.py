"""Reads of the access log: verification and proofs of inclusion."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice, pairwise

from django_tenants.utils import get_public_schema_name, schema_context, tenant_context

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
