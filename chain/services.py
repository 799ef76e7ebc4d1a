"""Writes to the ledger: keys, submitting, sealing on the hub, delivery to replicas.

The hub's canonical chain lives in the public schema; a tenant's replica in its
own schema. Functions say which one they touch by entering the schema
explicitly (``schema_context`` / ``tenant_context``), so they can be called
from a request, a task or a command alike.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Max
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context

from chain import keys as keyring
from chain.encoding import (
    ENCODING_VERSION,
    ENVELOPE_FIELDS,
    GENESIS_PREVIOUS_HASH,
    HEADER_FIELDS,
    EncodingError,
    b64,
    block_hash,
    block_signing_bytes,
    fields_of,
    format_time,
    sha256_hex,
    transaction_hash,
    transaction_signing_bytes,
)
from chain.merkle import merkle_root
from chain.models import (
    Block,
    ChainState,
    Outbox,
    PendingTransaction,
    RegisteredKey,
    SigningKey,
    Transaction,
    TransactionKind,
)
from chain.schemas import AUTHOR_KINDS, payload_errors
from chain.verification import (
    BlockInvalid,
    ChainVerifier,
    blocks_with_transactions,
    identity_proof_bytes,
    link_proof_bytes,
)

logger = logging.getLogger(__name__)

HUB_OWNER = "hub"
SEAL_LOCK = 0x4D50_0001  # pg advisory lock: one sealer at a time


class TransactionRejected(ValueError):
    """The hub refused a transaction; the message says why."""


class ReplicaError(RuntimeError):
    """A block from the hub failed verification; nothing was applied."""


def _lock(key: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def _replica_lock_key(schema_name: str) -> int:
    return 0x4D50_0000_0000 + zlib.crc32(schema_name.encode())


def _public():
    return schema_context(get_public_schema_name())


# --- Keys -------------------------------------------------------------------------


def signing_key_ensure(*, owner: str) -> SigningKey:
    """The current schema's active signing key for ``owner``, created on first use."""
    key = SigningKey.objects.filter(owner=owner, is_active=True).first()
    if key is not None:
        return key
    private = Ed25519PrivateKey.generate()
    public_raw = keyring.public_key_raw(private)
    key_id = keyring.key_id_for(public_raw)
    try:
        with transaction.atomic():
            return SigningKey.objects.create(
                owner=owner,
                key_id=key_id,
                public_key=b64(public_raw),
                sealed_private_key=keyring.seal_private_key(
                    private_key=private, owner=owner, key_id=key_id
                ),
                key_version=keyring.KEY_VERSION,
            )
    except IntegrityError:  # created concurrently: use theirs
        return SigningKey.objects.get(owner=owner, is_active=True)


def signing_key_private(key: SigningKey) -> Ed25519PrivateKey:
    return keyring.open_private_key(
        sealed=key.sealed_private_key, owner=key.owner, key_id=key.key_id, version=key.key_version
    )


# --- Building and accepting transactions ------------------------------------------


@dataclass(frozen=True)
class Envelope:
    kind: str
    author: str
    payload: dict
    timestamp: datetime
    signature: str

    @property
    def hash(self) -> str:
        return transaction_hash(**self.fields())

    def fields(self) -> dict:
        return fields_of(self, ENVELOPE_FIELDS)


def envelope_sign(
    *,
    kind: str,
    payload: dict,
    key: SigningKey,
    private: Ed25519PrivateKey | None = None,
    timestamp: datetime | None = None,
) -> Envelope:
    moment = timestamp or timezone.now()
    private = private or signing_key_private(key)
    message = transaction_signing_bytes(
        kind=kind, author=key.key_id, payload=payload, timestamp=moment
    )
    return Envelope(
        kind=kind,
        author=key.key_id,
        payload=payload,
        timestamp=moment,
        signature=keyring.sign(private, message),
    )


def identity_payload(
    *,
    subject_type: str,
    subject: str,
    tenant: str,
    tenant_kind: str,
    key: SigningKey,
    action: str = "register",
    extra: dict | None = None,
) -> dict:
    """An ``identity`` payload with the subject's proof that it holds the key."""
    proof = keyring.sign(
        signing_key_private(key), identity_proof_bytes(subject=subject, key_id=key.key_id)
    )
    return {
        "action": action,
        "subject_type": subject_type,
        "subject": subject,
        "tenant": tenant,
        "tenant_kind": tenant_kind,
        "key_id": key.key_id,
        "public_key": key.public_key,
        "proof": proof,
        **(extra or {}),
    }


def _check_link(envelope: Envelope, author: RegisteredKey) -> None:
    """A patient links an account at the author's hospital to their pseudonym.

    The key must be the subject's registered patient key, and the proof the
    patient's signature over (subject, tenant, links): a hospital cannot link
    someone on its own."""
    payload = envelope.payload
    if payload["subject_type"] != "patient":
        raise TransactionRejected("identity: only patients link accounts")
    if author.tenant != payload["tenant"]:
        raise TransactionRejected("identity: a hospital links only its own accounts")
    registered = RegisteredKey.objects.filter(
        key_id=payload["key_id"],
        owner=payload["subject"],
        owner_type=RegisteredKey.OwnerType.PATIENT,
        revoked_height__isnull=True,
    ).first()
    if registered is not None:
        public_key = registered.public_key
    else:  # registered a moment ago: accepted, not sealed yet
        public_key = (
            PendingTransaction.objects.filter(
                kind=TransactionKind.IDENTITY,
                payload__action="register",
                payload__subject_type="patient",
                payload__subject=payload["subject"],
                payload__key_id=payload["key_id"],
            )
            .values_list("payload__public_key", flat=True)
            .first()
        )
    if public_key is None or public_key != payload["public_key"]:
        raise TransactionRejected("identity: the key is not the subject's registered key")
    proof = link_proof_bytes(
        subject=payload["subject"], tenant=payload["tenant"], links=payload.get("links")
    )
    if not keyring.verify(payload["public_key"], payload["proof"], proof):
        raise TransactionRejected("identity: the patient's link proof is not valid")


def _check_identity(envelope: Envelope, author: RegisteredKey) -> None:
    payload = envelope.payload
    if payload["action"] == "link":
        _check_link(envelope, author)
        return
    if payload["key_id"] != keyring.key_id_for(keyring.unb64(payload["public_key"])):
        raise TransactionRejected("identity: key_id does not belong to public_key")
    proof = identity_proof_bytes(subject=payload["subject"], key_id=payload["key_id"])
    if not keyring.verify(payload["public_key"], payload["proof"], proof):
        raise TransactionRejected("identity: the proof of possession is not valid")
    subject_type = payload["subject_type"]
    if subject_type in ("hub", "tenant") and author.owner_type != RegisteredKey.OwnerType.HUB:
        raise TransactionRejected("identity: only the hub registers tenants")
    if subject_type in ("patient", "practitioner") and author.tenant != payload["tenant"]:
        raise TransactionRejected("identity: a hospital registers only its own people")
    if payload["action"] in ("register", "rotate"):
        if RegisteredKey.objects.filter(key_id=payload["key_id"]).exists():
            raise TransactionRejected("identity: this key is already registered")
    if payload["action"] == "rotate" and subject_type == "patient":
        # A hospital replaces (key recovery) the keys only of a patient it holds.
        if not _patient_held_at(payload["subject"], author.tenant):
            raise TransactionRejected("identity: this hospital holds no account for the patient")
        replaced = RegisteredKey.objects.filter(
            key_id=payload.get("replaces") or "", owner=payload["subject"]
        ).exists()
        if not replaced:
            raise TransactionRejected("identity: a rotation names the patient's key it replaces")


def _patient_keys_pending(key_ids: set[str]) -> dict[str, RegisteredKey]:
    """Patient keys accepted by the hub but not sealed yet (a patient registered
    a moment ago, or given new keys): usable at once, as the registry will hold
    them. Unsaved rows; only patient keys, and not ones a rotation replaced."""
    rows = PendingTransaction.objects.filter(
        kind=TransactionKind.IDENTITY,
        payload__subject_type="patient",
        payload__action__in=["register", "rotate"],
        payload__key_id__in=list(key_ids),
    ).values_list("payload", flat=True)
    return {
        payload["key_id"]: RegisteredKey(
            key_id=payload["key_id"],
            public_key=payload["public_key"],
            owner_type=RegisteredKey.OwnerType.PATIENT,
            owner=payload["subject"],
            tenant=payload["tenant"],
            tenant_kind=payload["tenant_kind"],
            registered_height=-1,
        )
        for payload in rows
    }


def _patient_held_at(pseudonym: str, tenant_slug: str) -> bool:
    """The patient registered or linked an account at this hospital."""
    query = {
        "kind": TransactionKind.IDENTITY,
        "payload__action__in": ["register", "link"],
        "payload__subject": pseudonym,
        "payload__tenant": tenant_slug,
    }
    return (
        Transaction.objects.filter(**query).exists()
        or PendingTransaction.objects.filter(**query).exists()
    )


def _patient_linked_at(author: RegisteredKey, tenant_slug: str) -> bool:
    """A patient's key acts at every hospital where the patient holds an account
    (registered there, or linked)."""
    if author.owner_type != RegisteredKey.OwnerType.PATIENT:
        return False
    return _patient_held_at(author.owner, tenant_slug)


def _check_access(envelope: Envelope, author: RegisteredKey) -> None:
    """Consent is the patient's: a grant or revocation must be signed with the
    patient's own registered key. The one exception is a declared emergency,
    which the doctor's hospital signs (and must give a reason for)."""
    payload = envelope.payload
    if payload["purpose"] == "emergency":
        if author.owner_type != RegisteredKey.OwnerType.TENANT:
            raise TransactionRejected("access: an emergency is declared by the hospital")
        if payload["grantee"]["type"] != "practitioner" or "reason_hash" not in payload:
            raise TransactionRejected("access: an emergency names the doctor and a reason")
        if payload.get("expires_at") is None:
            raise TransactionRejected("access: an emergency access must expire")
        return
    if author.owner_type != RegisteredKey.OwnerType.PATIENT:
        raise TransactionRejected("access: consent must be signed with the patient's own key")
    if author.owner != payload["patient"]:
        raise TransactionRejected("access: a patient grants access to their own records only")


# Who may say what about a research request.
_REQUEST_STATUSES = {
    "research": frozenset({"opened", "withdrawn", "closed"}),
    "hospital": frozenset({"approved", "declined", "released"}),
}


def _check_request(envelope: Envelope, author: RegisteredKey) -> None:
    """An organisation opens, withdraws and closes its own requests (closing a
    secure count carries the result's hash); a hospital approves, declines and
    releases for itself only."""
    payload = envelope.payload
    if author.tenant_kind == "research":
        if payload["organisation"] != author.tenant:
            raise TransactionRejected("request: an organisation speaks for its own requests only")
        if "hospital" in payload:
            raise TransactionRejected("request: an organisation cannot answer for a hospital")
    elif payload.get("hospital") != author.tenant:
        raise TransactionRejected("request: a hospital answers for itself only")
    if payload["status"] not in _REQUEST_STATUSES.get(author.tenant_kind, frozenset()):
        raise TransactionRejected(
            f"request: a {author.tenant_kind} may not set the status {payload['status']!r}"
        )


def _check_envelope(envelope: Envelope, author: RegisteredKey | None, submitted_by: str) -> str:
    """Every rule but uniqueness; returns the transaction's hash."""
    if envelope.kind not in TransactionKind.values:
        raise TransactionRejected(f"unknown transaction kind {envelope.kind!r}")
    errors = payload_errors(envelope.kind, envelope.payload)
    if errors:
        raise TransactionRejected("malformed payload: " + "; ".join(errors))
    if author is None:
        raise TransactionRejected(f"unknown or revoked author key {envelope.author!r}")
    allowed = AUTHOR_KINDS.get((author.owner_type, author.tenant_kind), frozenset())
    if envelope.kind not in allowed:
        raise TransactionRejected(
            f"a {author.owner_type} key may not author {envelope.kind!r} transactions"
        )
    if submitted_by != author.tenant and not _patient_linked_at(author, submitted_by):
        raise TransactionRejected("the author's key does not belong to the submitting tenant")
    if envelope.kind == TransactionKind.ACCESS:
        _check_access(envelope, author)
    elif envelope.kind == TransactionKind.REQUEST:
        _check_request(envelope, author)
    try:
        message, digest = _signing_bytes_and_hash(envelope)
    except EncodingError as error:
        raise TransactionRejected(f"malformed payload: {error}") from None
    if not _signature_valid(author.public_key, envelope.signature, message):
        raise TransactionRejected("the signature does not match the transaction")
    if envelope.kind == TransactionKind.IDENTITY:
        _check_identity(envelope, author)
    return digest


_SIGNATURE_TEXT = re.compile(r"[A-Za-z0-9+/=]*")


def _signing_bytes_and_hash(envelope: Envelope) -> tuple[bytes, str]:
    """``transaction_signing_bytes`` and ``transaction_hash`` of ``envelope``, encoding
    the body once. The hashed object is the signed one plus ``signature``, and with
    sorted keys that key falls just before ``timestamp``, the second last: the hashed
    bytes are the signed ones with ``,"signature":"..."`` spliced in there. Whenever
    the signed bytes do not end as expected the hash is computed the long way."""
    message = transaction_signing_bytes(
        kind=envelope.kind,
        author=envelope.author,
        payload=envelope.payload,
        timestamp=envelope.timestamp,
    )
    signature = envelope.signature
    tail = b',"timestamp":"%s","v":%d}' % (
        format_time(envelope.timestamp).encode("ascii"),
        ENCODING_VERSION,
    )
    if type(signature) is str and _SIGNATURE_TEXT.fullmatch(signature) and message.endswith(tail):
        hashed = b'%s,"signature":"%s"%s' % (
            message[: -len(tail)],
            signature.encode("ascii"),
            tail,
        )
        return message, sha256_hex(hashed)
    return message, transaction_hash(**envelope.fields())


@functools.lru_cache(maxsize=4096)
def _public_key(public_key_b64: str) -> Ed25519PublicKey | None:
    """The loaded key (public, so safe to keep), or None if it is not a valid key."""
    try:
        return Ed25519PublicKey.from_public_bytes(keyring.unb64(public_key_b64))
    except ValueError:
        return None


def _signature_valid(public_key_b64: str, signature_b64: str, message: bytes) -> bool:
    """``keys.verify`` with the author's key loaded once, not per transaction."""
    public = _public_key(public_key_b64)
    if public is None:
        return False
    try:
        public.verify(keyring.unb64(signature_b64), message)
    except (InvalidSignature, ValueError, TypeError, AttributeError):
        return False
    return True


_PENDING_PREPARE_SQL = """
    SELECT EXISTS (SELECT 1 FROM chain_pendingtransaction
                   WHERE hash = ANY (string_to_array(%(hashes)s, ',')))
        OR EXISTS (SELECT 1 FROM chain_transaction
                   WHERE hash = ANY (string_to_array(%(hashes)s, ','))),
           ARRAY (SELECT nextval(pg_get_serial_sequence('chain_pendingtransaction', 'id'))
                  FROM generate_series(1, %(count)s))
"""
_PENDING_COPY_SQL = """
    COPY chain_pendingtransaction (id, kind, author, payload, timestamp, signature, hash,
                                   submitted_by, received_at) FROM STDIN
"""


@transaction.atomic
def transactions_accept(
    *, envelopes: Sequence[Envelope], submitted_by: str
) -> list[PendingTransaction]:
    """The hub's gate: kind, payload schema, registered author, authority, signature.

    All or nothing: one bad envelope refuses the batch with ``TransactionRejected``
    (its position and the reason) and nothing is stored. Runs in the public schema.
    One query checks uniqueness (pending and sealed) and reserves the rows' ids,
    and one COPY stores them.
    """
    with _public():
        wanted = {envelope.author for envelope in envelopes}
        authors = {
            key.key_id: key
            for key in RegisteredKey.objects.filter(key_id__in=wanted, revoked_height__isnull=True)
        }
        if wanted - set(authors):
            authors.update(_patient_keys_pending(wanted - set(authors)))
        hashes = []
        for position, envelope in enumerate(envelopes):
            try:
                hashes.append(_check_envelope(envelope, authors.get(envelope.author), submitted_by))
            except TransactionRejected as error:
                prefix = f"transaction {position}: " if len(envelopes) > 1 else ""
                raise TransactionRejected(prefix + str(error)) from None
        if len(set(hashes)) != len(hashes):
            raise TransactionRejected("this transaction was already submitted")
        received_at = timezone.now()
        with connection.cursor() as cursor:
            # Hashes are hex: one comma-joined text is cheaper to send than an array.
            cursor.execute(_PENDING_PREPARE_SQL, {"hashes": ",".join(hashes), "count": len(hashes)})
            duplicate, ids = cursor.fetchone()
            if duplicate:
                raise TransactionRejected("this transaction was already submitted")
            ids.sort()  # the envelopes' order is their order in the block
            rows = [
                PendingTransaction(
                    id=row_id,
                    kind=TransactionKind(envelope.kind).value,
                    author=envelope.author,
                    payload=envelope.payload,
                    timestamp=envelope.timestamp,
                    signature=envelope.signature,
                    hash=digest,
                    submitted_by=submitted_by,
                    received_at=received_at,
                )
                for row_id, envelope, digest in zip(ids, envelopes, hashes, strict=True)
            ]
            try:
                with connection.wrap_database_errors, cursor.copy(_PENDING_COPY_SQL) as copy:
                    for row in rows:
                        copy.write_row(
                            (
                                row.id,
                                row.kind,
                                row.author,
                                json.dumps(row.payload),
                                row.timestamp,
                                row.signature,
                                row.hash,
                                submitted_by,
                                received_at,
                            )
                        )
            except IntegrityError:  # the same envelope, submitted at the same moment
                raise TransactionRejected("this transaction was already submitted") from None
        for row in rows:
            row._state.adding = False
            row._state.db = connection.alias
    accepted = len(rows)
    transaction.on_commit(lambda: _schedule_seal(accepted))
    return rows


def transaction_accept(*, envelope: Envelope, submitted_by: str) -> PendingTransaction:
    return transactions_accept(envelopes=[envelope], submitted_by=submitted_by)[0]


def transactions_submit(*, tenant, items: Sequence[tuple[str, dict]]) -> list[PendingTransaction]:
    """Sign ``(kind, payload)`` items with ``tenant``'s key and submit them as one batch."""
    with tenant_context(tenant):
        key = signing_key_ensure(owner=tenant.slug)
        private = signing_key_private(key)
        envelopes = [
            envelope_sign(kind=kind, payload=payload, key=key, private=private)
            for kind, payload in items
        ]
    return transactions_accept(envelopes=envelopes, submitted_by=tenant.slug)


def transaction_submit(*, tenant, kind: str, payload: dict) -> PendingTransaction:
    """Sign with ``tenant``'s key (in its schema) and submit to the hub."""
    return transactions_submit(tenant=tenant, items=[(kind, payload)])[0]


def _schedule_seal(accepted: int) -> None:
    """Ask a worker to seal: at once for a full block, else when the wait is over.
    One scheduled seal covers every submission inside the wait (a Redis key
    debounces them); the seal task reschedules itself while anything waits."""
    from chain.tasks import block_seal_task
    from medportal.health import redis_client, redis_key

    headers = {"_schema_name": get_public_schema_name()}
    if accepted >= settings.CHAIN_MAX_TRANSACTIONS_PER_BLOCK:
        block_seal_task.apply_async(headers=headers)
        return
    wait_ms = max(1, settings.CHAIN_MAX_BLOCK_WAIT_MS)
    try:
        first = redis_client().set(redis_key("chain:seal-scheduled"), "1", nx=True, px=wait_ms)
    except Exception:  # noqa: BLE001  (no debounce without Redis; the beat backstop remains)
        first = True
    if first:
        block_seal_task.apply_async(countdown=wait_ms / 1000, headers=headers)


# --- Sealing blocks on the hub ------------------------------------------------------


def _chain_state_for_update() -> ChainState:
    state = ChainState.objects.select_for_update().filter(id=1).first()
    if state is None:
        ChainState.objects.get_or_create(id=1)
        state = ChainState.objects.select_for_update().get(id=1)
    return state


@dataclass
class _SealContext:
    """What every block of one sealing run needs, read once."""

    hub_key: SigningKey
    hub_private: Ed25519PrivateKey
    member_ids: list[int]

    @classmethod
    def load(cls) -> _SealContext:
        from medportal.tenants.selectors import tenant_list_members

        hub_key = SigningKey.objects.get(owner=HUB_OWNER, is_active=True)
        return cls(
            hub_key=hub_key,
            hub_private=signing_key_private(hub_key),
            member_ids=list(tenant_list_members().values_list("id", flat=True)),
        )


def _registered_keys_apply(transactions: Sequence[Transaction], height: int) -> None:
    """Keep the derived key registry in step with ``identity`` transactions."""
    for item in transactions:
        if item.kind != TransactionKind.IDENTITY:
            continue
        payload = item.payload
        if payload.get("replaces") or payload["action"] == "revoke":
            RegisteredKey.objects.filter(
                key_id=payload.get("replaces") or payload["key_id"], revoked_height__isnull=True
            ).update(revoked_height=height)
        if payload["action"] in ("register", "rotate"):
            RegisteredKey.objects.get_or_create(
                key_id=payload["key_id"],
                defaults={
                    "public_key": payload["public_key"],
                    "owner_type": payload["subject_type"],
                    "owner": payload["subject"],
                    "tenant": payload["tenant"],
                    "tenant_kind": payload["tenant_kind"],
                    "registered_height": height,
                },
            )


def _append(
    items: Sequence[PendingTransaction | _Sealable],
    context: _SealContext | None = None,
    cursor=None,
) -> Block:
    """Append one block holding ``items``; the caller holds the seal lock.

    One statement writes the block, moves the waiting rows into it (inside the
    database, in id order: their order in the Merkle tree), advances the chain
    state and adds one outbox row per member tenant."""
    context = context or _SealContext.load()
    if cursor is None:
        with connection.cursor() as cursor:
            return _append(items, context, cursor)
    cursor.execute("SELECT height, head_hash FROM chain_chainstate WHERE id = 1 FOR UPDATE")
    row = cursor.fetchone()
    if row is None:
        state = _chain_state_for_update()
        row = (state.height, state.head_hash)
    height = row[0] + 1
    previous = row[1] if height > 0 else GENESIS_PREVIOUS_HASH
    header = {
        "height": height,
        "previous_hash": previous,
        "created_at": timezone.now(),
        "proposer": HUB_OWNER,
        "merkle_root": merkle_root([item.hash for item in items]),
        "transaction_count": len(items),
    }
    signature = keyring.sign(context.hub_private, block_signing_bytes(**header))
    block = Block(
        **header,
        hub_signature=signature,
        hash=block_hash(hub_signature=signature, **header),
        stored_at=timezone.now(),
    )
    pending_ids = [item.pk for item in items]
    from_pending = all(pending_ids)
    cursor.execute(
        _SEAL_SQL,
        {
            **header,
            "hub_signature": block.hub_signature,
            "hash": block.hash,
            "stored_at": block.stored_at,
            # ids as one comma-joined text: cheaper to send than an array
            "pending_ids": ",".join(map(str, pending_ids)) if from_pending else "",
            "members": ",".join(map(str, context.member_ids)),
        },
    )
    block.pk, outbox_ids, moved = cursor.fetchone()
    if moved != (len(items) if from_pending else 0):
        raise RuntimeError(f"block {height}: {moved} of {len(items)} waiting rows were moved")
    block._state.adding = False
    block._state.db = connection.alias
    if not from_pending:  # the genesis transaction was never stored as pending
        Transaction.objects.bulk_create(
            [
                Transaction(block=block, index=index, hash=item.hash, **item.envelope())
                for index, item in enumerate(items)
            ]
        )
    _registered_keys_apply(items, height)
    block.outbox_ids = sorted(outbox_ids)
    return block


_SEAL_SQL = """
    WITH block AS (
        INSERT INTO chain_block (height, previous_hash, created_at, proposer, merkle_root,
                                 transaction_count, hub_signature, hash, encoding_version,
                                 stored_at)
        VALUES (%(height)s, %(previous_hash)s, %(created_at)s, %(proposer)s,
                %(merkle_root)s, %(transaction_count)s, %(hub_signature)s, %(hash)s, 1,
                %(stored_at)s)
        RETURNING id
    ), moved AS (
        DELETE FROM chain_pendingtransaction
        WHERE id = ANY (string_to_array(%(pending_ids)s, ',')::bigint[])
        RETURNING id, kind, author, payload, timestamp, signature, hash
    ), sealed AS (
        INSERT INTO chain_transaction (block_id, index, kind, author, payload, timestamp,
                                       signature, hash, encoding_version)
        SELECT block.id, row_number() OVER (ORDER BY moved.id) - 1, moved.kind,
               moved.author, moved.payload, moved.timestamp, moved.signature, moved.hash, 1
        FROM moved CROSS JOIN block
    ), state AS (
        UPDATE chain_chainstate SET height = %(height)s, head_hash = %(hash)s WHERE id = 1
    ), outbox AS (
        INSERT INTO chain_outbox (block_id, tenant_id, created_at, attempts)
        SELECT block.id, member, %(stored_at)s, 0
        FROM block CROSS JOIN unnest(string_to_array(%(members)s, ',')::bigint[]) AS member
        RETURNING id
    )
    SELECT (SELECT id FROM block), ARRAY (SELECT id FROM outbox),
           (SELECT count(*) FROM moved)
"""


@dataclass(frozen=True)
class _Sealable:
    """What sealing needs of a waiting row (its payload only for ``identity``)."""

    pk: int
    hash: str
    kind: str
    payload: dict | None
    received_at: datetime


_PENDING_NEXT_SQL = """
    SELECT id, hash, kind, CASE WHEN kind = 'identity' THEN payload END, received_at
    FROM chain_pendingtransaction ORDER BY id LIMIT %s
"""


def _pending_next(cursor, limit: int) -> list[_Sealable]:
    cursor.execute(_PENDING_NEXT_SQL, [limit])
    return [
        _Sealable(
            pk=pk,
            hash=digest,
            kind=kind,
            payload=json.loads(payload) if isinstance(payload, str | bytes) else payload,
            received_at=received_at,
        )
        for pk, digest, kind, payload, received_at in cursor.fetchall()
    ]


def _announce(blocks: Sequence[Block]) -> None:
    """After the commit: deliver and tell the pages. One delivery task per tenant,
    for the newest block only (delivering it brings every block before it; the
    outbox rows of the others are confirmed on the way, or re-sent by the sweep)."""
    if not blocks:
        return
    outbox_ids = blocks[-1].outbox_ids
    events = [
        {"type": "block", "tenant": HUB_OWNER, "height": block.height, "hash": block.hash}
        for block in blocks
    ]
    transaction.on_commit(lambda: outbox_dispatch(outbox_ids=outbox_ids))
    transaction.on_commit(lambda: _chain_event(get_public_schema_name(), events))


def hub_genesis_ensure() -> Block:
    """The hub's key and the genesis block (height 0), created once."""
    with _public(), transaction.atomic():
        _lock(SEAL_LOCK)
        genesis = Block.objects.filter(height=0).first()
        if genesis is not None:
            return genesis
        key = signing_key_ensure(owner=HUB_OWNER)
        payload = identity_payload(
            subject_type="hub", subject=HUB_OWNER, tenant=HUB_OWNER, tenant_kind="hub", key=key
        )
        envelope = envelope_sign(kind=TransactionKind.IDENTITY, payload=payload, key=key)
        item = PendingTransaction(**envelope.fields(), hash=envelope.hash, submitted_by=HUB_OWNER)
        genesis = _append([item])
        _announce([genesis])
        return genesis


def block_seal(*, force: bool = False) -> list[int]:
    """Seal waiting transactions into blocks of at most CHAIN_MAX_TRANSACTIONS_PER_BLOCK.

    A partial block is sealed only when its oldest transaction has waited
    CHAIN_MAX_BLOCK_WAIT_MS, or with ``force``. Returns the new heights.
    """
    limit = settings.CHAIN_MAX_TRANSACTIONS_PER_BLOCK
    max_wait = timedelta(milliseconds=settings.CHAIN_MAX_BLOCK_WAIT_MS)
    sealed: list[Block] = []
    context = None
    while True:
        # One database transaction per block keeps each commit small.
        with _public(), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SEAL_LOCK])
            # After the lock: this statement sees what the previous sealer committed.
            items = _pending_next(cursor, limit)
            if not items:
                break
            if len(items) < limit and not force:
                if timezone.now() - items[0].received_at < max_wait:
                    break
            # Members and the hub's key are read once per run, inside the lock.
            context = context or _SealContext.load()
            sealed.append(_append(items, context, cursor))
    _announce(sealed)
    return [block.height for block in sealed]


def block_seal_due_in() -> float | None:
    """Seconds until the oldest waiting transaction is due, or None if none waits."""
    with _public():
        oldest = PendingTransaction.objects.order_by("id").values_list("received_at", flat=True)
        first = oldest.first()
    if first is None:
        return None
    due = first + timedelta(milliseconds=settings.CHAIN_MAX_BLOCK_WAIT_MS)
    return max(0.0, (due - timezone.now()).total_seconds())


# --- Delivery to replicas ---------------------------------------------------------


def outbox_dispatch(*, outbox_ids: Sequence[int]) -> int:
    """Send delivery tasks for these outbox rows (after the block's commit)."""
    from chain.tasks import deliver_block_task

    with _public():
        rows = list(Outbox.objects.filter(id__in=outbox_ids).select_related("tenant"))
        Outbox.objects.filter(id__in=outbox_ids).update(
            sent_at=timezone.now(), attempts=F("attempts") + 1
        )
    for row in rows:
        deliver_block_task.apply_async(
            args=[row.pk], headers={"_schema_name": row.tenant.schema_name}
        )
    return len(rows)


def outbox_sweep(*, older_than: timedelta | None = None) -> int:
    """Re-send what was not confirmed in time: one task per lagging tenant, for its
    newest unconfirmed block (delivering it pulls every missing block before it)."""
    older_than = older_than or timedelta(seconds=settings.CHAIN_REDELIVERY_SECONDS)
    cutoff = timezone.now() - older_than
    with _public():
        open_rows = Outbox.objects.filter(confirmed_at__isnull=True, created_at__lt=cutoff)
        stale = open_rows.filter(sent_at__isnull=True) | open_rows.filter(sent_at__lt=cutoff)
        newest = stale.values("tenant_id").annotate(newest=Max("id"))
        ids = [row["newest"] for row in newest]
    if ids:
        logger.info("re-sending %d unconfirmed deliveries", len(ids))
    return outbox_dispatch(outbox_ids=ids)


_BLOCK_COPY_FIELDS = (*HEADER_FIELDS, "hub_signature", "hash", "encoding_version")
_TRANSACTION_COPY_FIELDS = ("index", *ENVELOPE_FIELDS, "hash", "encoding_version")


def _copy_blocks(verified: Sequence[tuple]) -> None:
    """Write verified blocks of the hub's into the current schema's replica, in bulk."""
    blocks = Block.objects.bulk_create(
        [
            Block(**{name: getattr(source, name) for name in _BLOCK_COPY_FIELDS})
            for source, _ in verified
        ]
    )
    Transaction.objects.bulk_create(
        [
            Transaction(
                block=block, **{name: getattr(item, name) for name in _TRANSACTION_COPY_FIELDS}
            )
            for block, (_, transactions) in zip(blocks, verified, strict=True)
            for item in transactions
        ],
        batch_size=2000,
    )
    for block, (_, transactions) in zip(blocks, verified, strict=True):
        identities = [item for item in transactions if item.kind == TransactionKind.IDENTITY]
        if identities:
            _registered_keys_apply(identities, block.height)


def _hub_blocks(*, after: int, until: int, limit: int) -> list[tuple[Block, list[Transaction]]]:
    from chain.verification import blocks_with_transactions

    with _public():
        return list(islice(blocks_with_transactions(after=after, until=until, chunk=limit), limit))


@dataclass(frozen=True)
class SyncResult:
    tenant: str
    applied: int
    height: int


def replica_sync(
    *,
    tenant,
    up_to: int | None = None,
    chunk: int = 2000,
    progress: Callable[[int, int], None] | None = None,
) -> SyncResult:
    """Bring ``tenant``'s replica up to ``up_to`` (default: the hub's head).

    Strictly in height order and idempotent: blocks the replica already has are
    skipped, a gap is filled by pulling from the hub, and every block is verified
    before it is applied. Confirms the hub's outbox rows in the same database
    transaction. A block that does not verify is not applied (those before it
    are) and ``ReplicaError`` names it.
    """
    applied = 0
    with tenant_context(tenant):
        current = ChainState.objects.filter(id=1).values_list("height", flat=True).first()
    with _public():
        hub_height = ChainState.objects.get(id=1).height
    if current is not None and current >= (hub_height if up_to is None else min(up_to, hub_height)):
        # Nothing to apply (a redelivery, or a block an earlier task already
        # brought): confirm and return without taking the replica's lock.
        _outbox_confirm(tenant, current)
        return SyncResult(tenant=tenant.slug, applied=0, height=current)
    height = current if current is not None else -1
    while True:
        try:
            step = _sync_step(tenant=tenant, up_to=up_to, chunk=chunk, fast=True)
        except _FastCopyRefused:
            # Something in the range does not verify: redo it block by block, which
            # keeps the good blocks before the bad one and names the bad one.
            step = _sync_step(tenant=tenant, up_to=up_to, chunk=chunk, fast=False)
        applied += step.applied
        height = step.height
        if step.refused is not None:
            raise ReplicaError(
                f"{tenant.slug}: block from the hub refused at height {step.refused.height}: "
                f"{step.refused.reason}"
            )
        if progress is not None and step.applied:
            progress(height, step.target)
        if step.done:
            break
    return SyncResult(tenant=tenant.slug, applied=applied, height=height)


class _FastCopyRefused(Exception):
    pass


@dataclass
class _Step:
    applied: int
    height: int
    target: int
    done: bool = False
    refused: BlockInvalid | None = None


_COPY_BLOCKS_SQL = """
    INSERT INTO chain_block (height, previous_hash, created_at, proposer, merkle_root,
                             transaction_count, hub_signature, hash, encoding_version, stored_at)
    SELECT height, previous_hash, created_at, proposer, merkle_root, transaction_count,
           hub_signature, hash, encoding_version, now()
    FROM public.chain_block WHERE height > %s AND height <= %s ORDER BY height
"""
_COPY_TRANSACTIONS_SQL = """
    INSERT INTO chain_transaction (block_id, index, kind, author, payload, timestamp,
                                   signature, hash, encoding_version)
    SELECT replica.id, source.index, source.kind, source.author, source.payload,
           source.timestamp, source.signature, source.hash, source.encoding_version
    FROM public.chain_transaction source
    JOIN public.chain_block hub ON hub.id = source.block_id
    JOIN chain_block replica ON replica.height = hub.height
    WHERE hub.height > %s AND hub.height <= %s
"""


def _sync_step(*, tenant, up_to: int | None, chunk: int, fast: bool) -> _Step:
    """Apply the next ``chunk`` blocks to the replica in one database transaction.

    Fast: the database copies the range from the hub's tables, then every copied
    block is verified before the transaction commits (a failure rolls it all back
    and raises ``_FastCopyRefused``). Checked: blocks are read, verified and
    written one by one, keeping those before a bad one.
    """
    events: list[dict] = []
    with tenant_context(tenant), transaction.atomic():
        _lock(_replica_lock_key(tenant.schema_name))
        state = _chain_state_for_update()
        with _public():
            hub_height = ChainState.objects.get(id=1).height
        target = hub_height if up_to is None else min(up_to, hub_height)
        if state.height >= target:
            _outbox_confirm(tenant, state.height)
            return _Step(applied=0, height=state.height, target=target, done=True)
        verifier = _delivery_verifier(state)
        start, last = state.height, min(state.height + chunk, target)
        refused = None
        if fast:
            with connection.cursor() as cursor:
                cursor.execute(_COPY_BLOCKS_SQL, [start, last])
                copied = cursor.rowcount
                cursor.execute(_COPY_TRANSACTIONS_SQL, [start, last])
            if copied == 0:
                raise ReplicaError(
                    f"{tenant.slug}: the hub's head is {target} but it serves no block after "
                    f"{start}; verify the hub's chain"
                )
            # One pass over the copied rows: verify each block, and note what the
            # key registry and the pages need, without reading anything twice.
            good = None
            recent: deque = deque(maxlen=20)
            for block, transactions in blocks_with_transactions(after=start, until=last):
                try:
                    verifier.check(block, transactions)
                except BlockInvalid:
                    raise _FastCopyRefused from None
                identities = [t for t in transactions if t.kind == TransactionKind.IDENTITY]
                if identities:
                    _registered_keys_apply(identities, block.height)
                good = block
                recent.append(block)
            if good is None or good.height != start + copied:
                raise _FastCopyRefused
            applied_now = copied
            state.height, state.head_hash = good.height, good.hash
            events = [
                {"type": "block", "tenant": tenant.slug, "height": b.height, "hash": b.hash}
                for b in recent
            ]
        else:
            batch = _hub_blocks(after=start, until=last, limit=chunk)
            if not batch:
                raise ReplicaError(
                    f"{tenant.slug}: the hub's head is {target} but it serves no block after "
                    f"{start}; verify the hub's chain"
                )
            verified = []
            for source, transactions in batch:
                try:
                    verifier.check(source, transactions)
                except BlockInvalid as failure:
                    refused = failure
                    break
                verified.append((source, transactions))
            applied_now = len(verified)
            if verified:
                _copy_blocks(verified)
                state.height, state.head_hash = verified[-1][0].height, verified[-1][0].hash
                events = [
                    {
                        "type": "block",
                        "tenant": tenant.slug,
                        "height": source.height,
                        "hash": source.hash,
                    }
                    for source, _ in verified[-20:]
                ]
        # The blocks before a refused one verified: keep them.
        state.last_delivery_at = timezone.now()
        state.save(update_fields=["height", "head_hash", "last_delivery_at"])
        _outbox_confirm(tenant, state.height)
        schema = tenant.schema_name
        transaction.on_commit(lambda: _chain_event(schema, events))
    # Reached the target: no second round trip just to find nothing left.
    done = refused is None and state.height >= target
    return _Step(
        applied=applied_now, height=state.height, target=target, refused=refused, done=done
    )


def _delivery_verifier(state: ChainState) -> ChainVerifier:
    """A verifier resuming after the replica's head, checking hub signatures.

    Authors' signatures were checked by the hub on accept (and by full
    ``verify_chain`` runs), so delivery needs only the hub's key: loading every
    registered key (one per patient, and growing) for each delivered block
    would cost more than the rest of the delivery."""
    if state.height < 0:
        return ChainVerifier(check_transaction_signatures=False)
    hub_key = (
        RegisteredKey.objects.filter(owner_type=RegisteredKey.OwnerType.HUB)
        .values_list("public_key", flat=True)
        .first()
    )
    return ChainVerifier(
        expected_height=state.height + 1,
        previous_hash=state.head_hash,
        hub_key=hub_key,
        check_transaction_signatures=False,
    )


def replica_mark_failed(*, tenant, reason: str) -> None:
    """Record a refused delivery where the dashboard and chain_status show it."""
    with tenant_context(tenant):
        ChainState.objects.update_or_create(
            id=1,
            defaults={
                "last_verification_ok": False,
                "last_verified_at": timezone.now(),
                "last_verification_error": f"delivery refused: {reason}",
            },
        )


def _outbox_confirm(tenant, height: int) -> None:
    with _public():
        Outbox.objects.filter(
            tenant_id=tenant.pk, confirmed_at__isnull=True, block__height__lte=height
        ).update(confirmed_at=timezone.now())


def _chain_event(schema_name: str, events: list[dict]) -> None:
    """Tell open explorer pages (that schema's) and the hub dashboard. Long
    catch-ups send only their newest block; pages pull what they missed."""
    from medportal.realtime import group_send_many

    if not events:
        return
    shown = events if len(events) <= 20 else events[-1:]
    last = events[-1]
    dashboard = {
        "type": "replica",
        "tenant": last["tenant"],
        "height": last["height"],
        "hash": last["hash"],
    }
    try:
        group_send_many(
            [(f"chain.{schema_name}", event) for event in shown] + [("chain.dashboard", dashboard)]
        )
    except Exception as error:  # noqa: BLE001  (a push is best effort; pages pull)
        logger.warning("chain event not pushed: %s", type(error).__name__)


# --- Repair ------------------------------------------------------------------------


class RepairRefused(RuntimeError):
    pass


def replica_repair(*, tenant, progress: Callable[[int, int], None] | None = None) -> SyncResult:
    """Re-copy ``tenant``'s replica from the hub, refusing if the hub's own chain
    does not verify. One database transaction: the replica is never seen half-copied."""
    from chain.selectors import chain_verify_schema

    hub_report = chain_verify_schema(schema_name=get_public_schema_name())
    if not hub_report.ok:
        raise RepairRefused(
            f"the hub's chain fails verification at height {hub_report.first_bad_height}: "
            f"{hub_report.reason}; repair the hub first"
        )
    with tenant_context(tenant), transaction.atomic():
        _lock(_replica_lock_key(tenant.schema_name))
        with connection.cursor() as cursor:
            # Checks still pending in this transaction would block ALTER TABLE.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            # The append-only triggers need the table owner to lift, and only for
            # this transaction's lifetime.
            for table in ("chain_transaction", "chain_block"):
                cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
            # chain_outbox is the hub's table; a tenant's copy is always empty but
            # its foreign key to chain_block makes TRUNCATE name it too.
            cursor.execute("TRUNCATE chain_transaction, chain_block, chain_outbox")
            for table in ("chain_transaction", "chain_block"):
                cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
        RegisteredKey.objects.all().delete()
        ChainState.objects.filter(id=1).update(
            height=-1,
            head_hash="",
            last_verified_height=-1,
            last_verified_hash="",
            last_verification_ok=None,
            last_verification_error="",
        )
        result = replica_sync(tenant=tenant, progress=progress)
    return result


# --- Tenants joining ---------------------------------------------------------------


def tenant_join(*, tenant, progress: Callable[[int, int], None] | None = None) -> SyncResult:
    """Register ``tenant``'s signing key on the chain (an ``identity`` transaction the
    hub vouches for) and give it every block, each verified before it is applied.
    Safe to run again: a registered tenant is only brought up to date."""
    with _public():
        registered = RegisteredKey.objects.filter(
            owner_type=RegisteredKey.OwnerType.TENANT,
            owner=tenant.slug,
            revoked_height__isnull=True,
        ).exists()
    if not registered:
        with tenant_context(tenant):
            key = signing_key_ensure(owner=tenant.slug)
            payload = identity_payload(
                subject_type="tenant",
                subject=tenant.slug,
                tenant=tenant.slug,
                tenant_kind=tenant.kind,
                key=key,
            )
        with _public():
            hub_key = SigningKey.objects.get(owner=HUB_OWNER, is_active=True)
            envelope = envelope_sign(kind=TransactionKind.IDENTITY, payload=payload, key=hub_key)
        transaction_accept(envelope=envelope, submitted_by=HUB_OWNER)
        block_seal(force=True)
    return replica_sync(tenant=tenant, progress=progress)
