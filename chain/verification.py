"""Checking blocks: the same rules when a replica applies a block and when
``verify_chain`` re-hashes a whole copy of the chain."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import orjson
import psycopg
from django.db import connection

from chain.encoding import (
    ENVELOPE_FIELDS,
    GENESIS_PREVIOUS_HASH,
    HEADER_FIELDS,
    EncodingError,
    block_hash_of,
    block_signing_bytes,
    canonical_json,
    fields_of,
    transaction_hash,
    transaction_hash_checked,
    transaction_signing_bytes,
)
from chain.keys import verify
from chain.merkle import merkle_root
from chain.models import Block, RegisteredKey, Transaction, TransactionKind


class BlockInvalid(Exception):
    def __init__(self, height: int, reason: str):
        super().__init__(f"height {height}: {reason}")
        self.height = height
        self.reason = reason


@dataclass(frozen=True)
class KnownKey:
    public_key: str
    owner_type: str
    tenant_kind: str


def identity_proof_bytes(*, subject: str, key_id: str) -> bytes:
    """What a key's holder signs to prove possession when it is registered."""
    return canonical_json({"proof_of_possession": {"subject": subject, "key_id": key_id}})


def link_proof_bytes(*, subject: str, tenant: str, links: str | None) -> bytes:
    """What a patient signs (with the subject's key) to link an account at ``tenant``."""
    return canonical_json({"link": {"subject": subject, "tenant": tenant, "links": links}})


@dataclass
class ChainVerifier:
    """Feed it blocks in height order; it raises ``BlockInvalid`` at the first bad one.

    ``check_signatures`` covers the hub's block signatures and, with
    ``check_transaction_signatures``, every author's signature (keys are learnt
    from the ``identity`` transactions as they stream past, so a full run
    trusts nothing but the genesis block).
    """

    expected_height: int = 0
    previous_hash: str = GENESIS_PREVIOUS_HASH
    check_signatures: bool = True
    check_transaction_signatures: bool = True
    keys: dict[str, KnownKey] = field(default_factory=dict)
    hub_key: str | None = None
    blocks_checked: int = 0
    transactions_checked: int = 0

    @classmethod
    def resume(cls, *, height: int, previous_hash: str, **options) -> ChainVerifier:
        """Continue after a verified prefix, with the keys that prefix registered."""
        keys = {
            key.key_id: KnownKey(key.public_key, key.owner_type, key.tenant_kind)
            for key in RegisteredKey.objects.all()
        }
        hub = RegisteredKey.objects.filter(owner_type=RegisteredKey.OwnerType.HUB).first()
        return cls(
            expected_height=height + 1,
            previous_hash=previous_hash,
            keys=keys,
            hub_key=hub.public_key if hub else None,
            **options,
        )

    def check(self, block: BlockRow | Block, transactions: Sequence[TransactionRow]) -> None:
        height = block.height
        if height != self.expected_height:
            if height > self.expected_height:
                raise BlockInvalid(self.expected_height, f"block missing (next stored is {height})")
            raise BlockInvalid(height, f"out of order (expected height {self.expected_height})")
        if block.previous_hash != self.previous_hash:
            raise BlockInvalid(height, "previous_hash does not match the hash of the block before")
        if block.encoding_version != 1:
            raise BlockInvalid(height, f"unknown encoding version {block.encoding_version}")
        if len(transactions) != block.transaction_count:
            raise BlockInvalid(
                height,
                f"holds {len(transactions)} transactions, header says {block.transaction_count}",
            )
        hashes = []
        for position, item in enumerate(transactions):
            if item.index != position:
                raise BlockInvalid(height, f"transaction {position} is missing or out of order")
            try:
                if type(item) is TransactionRow and item.plain:
                    recomputed = transaction_hash_checked(
                        item.kind, item.author, item.payload, item.timestamp, item.signature
                    )
                else:
                    recomputed = transaction_hash(
                        kind=item.kind,
                        author=item.author,
                        payload=item.payload,
                        timestamp=item.timestamp,
                        signature=item.signature,
                    )
            except EncodingError as error:
                raise BlockInvalid(height, f"transaction {position}: {error}") from None
            if recomputed != item.hash:
                raise BlockInvalid(height, f"transaction {position} does not match its hash")
            self._check_transaction_signature(height, position, item)
            # In block order: a key registered earlier in this block signs what
            # follows it (a patient registered and consenting in one block).
            self._learn_keys(item, height)
            hashes.append(item.hash)
        if merkle_root(hashes) != block.merkle_root:
            raise BlockInvalid(height, "Merkle root does not match the transactions")
        recomputed = block_hash_of(
            height,
            block.previous_hash,
            block.created_at,
            block.proposer,
            block.merkle_root,
            block.transaction_count,
            block.hub_signature,
        )
        if recomputed != block.hash:
            raise BlockInvalid(height, "block hash does not match its contents")
        if height == 0:
            self._learn_genesis(transactions)
        if self.check_signatures:
            if self.hub_key is None:
                raise BlockInvalid(height, "no hub key is known (genesis missing)")
            header = block.header_fields()
            if not verify(self.hub_key, block.hub_signature, block_signing_bytes(**header)):
                raise BlockInvalid(height, "hub signature is not valid")
        self.expected_height = height + 1
        self.previous_hash = block.hash
        self.blocks_checked += 1
        self.transactions_checked += len(transactions)

    def _check_transaction_signature(self, height: int, position: int, item: Transaction) -> None:
        if not (self.check_signatures and self.check_transaction_signatures):
            return
        if height == 0:
            key = item.payload.get("public_key")  # the hub's self-signed registration
        else:
            known = self.keys.get(item.author)
            key = known.public_key if known else None
        if key is None:
            raise BlockInvalid(height, f"transaction {position} is signed by an unknown key")
        message = transaction_signing_bytes(
            kind=item.kind, author=item.author, payload=item.payload, timestamp=item.timestamp
        )
        if not verify(key, item.signature, message):
            raise BlockInvalid(height, f"transaction {position} has an invalid author signature")

    def _learn_genesis(self, transactions: Sequence[Transaction]) -> None:
        for item in transactions:
            if item.kind == TransactionKind.IDENTITY and item.payload.get("subject_type") == "hub":
                self.hub_key = item.payload["public_key"]

    def _learn_keys(self, item: Transaction, height: int) -> None:
        if item.kind != TransactionKind.IDENTITY:
            return
        payload = item.payload
        if payload["action"] in ("register", "rotate"):
            self.keys[payload["key_id"]] = KnownKey(
                payload["public_key"], payload["subject_type"], payload["tenant_kind"]
            )
        if payload["action"] == "revoke":
            self.keys.pop(payload["key_id"], None)


class BlockRow(NamedTuple):
    """A block as read for checking: plain values, no model instance to build."""

    id: int
    height: int
    previous_hash: str
    created_at: datetime
    proposer: str
    merkle_root: str
    transaction_count: int
    hub_signature: str
    hash: str
    encoding_version: int

    def header_fields(self) -> dict:
        return fields_of(self, HEADER_FIELDS)


class TransactionRow(NamedTuple):
    block_id: int
    index: int
    kind: str
    author: str
    payload: Any
    timestamp: datetime
    signature: str
    hash: str
    encoding_version: int
    # Set by blocks_with_transactions only: kind, author and signature are str
    # (columns) and the payload holds no float, so canonical_json's _check would
    # pass and the verifier may skip it.
    plain: bool = False

    def envelope(self) -> dict:
        return fields_of(self, ENVELOPE_FIELDS)


def _plain(value: Any) -> bool:
    """No float anywhere in a value decoded from JSON (dicts, lists, scalars)."""
    kind = type(value)
    if kind is dict:
        value = value.values()
    elif kind is not list:
        return kind is not float
    for item in value:
        kind = type(item)
        if kind is float:
            return False
        if (kind is dict or kind is list) and not _plain(item):
            return False
    return True


def _payload(text: str | None) -> tuple[Any, bool]:
    """The payload as Django's JSONField reads it (``json.loads`` of jsonb's text),
    and whether it is plain. orjson decodes the same text to the same values
    except that it turns integers beyond 64 bits into floats: any float sends the
    text back to ``json.loads``, so the value is always the reference one."""
    if text is None:
        return None, True
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text), False
    if _plain(value):
        return value, True
    return json.loads(text), False


# One statement per chunk (one snapshot): the blocks in a range of heights, each
# with its transactions in index order (none: one row of NULLs). The plan must not
# depend on fresh statistics (a chain just copied or built has none): a bounded
# range on the height index, and per block a probe of the block_id index (the
# OFFSET 0 keeps PostgreSQL from turning the lateral join into a hash join over
# the whole transaction table, which would make each chunk cost the whole chain).
_CHUNK_SQL = """
SELECT b.id, b.height, b.previous_hash, b.created_at, b.proposer, b.merkle_root,
       b.transaction_count, b.hub_signature, b.hash, b.encoding_version,
       t.index, t.kind, t.author, t.payload, t.timestamp, t.signature, t.hash,
       t.encoding_version
FROM {block} AS b
LEFT JOIN LATERAL (
    SELECT index, kind, author, payload::text AS payload, timestamp, signature, hash,
           encoding_version
    FROM {transaction}
    WHERE block_id = b.id
    OFFSET 0
) AS t ON true
WHERE b.height > %s AND b.height <= %s
ORDER BY b.height, t.index
"""
# Past a gap in the heights: where the next stored block is.
_NEXT_SQL = "SELECT min(height) FROM {block} WHERE height > %s AND height <= %s"
_MAX_HEIGHT = 2**63 - 1


def _query(template: str, params: tuple) -> list[tuple]:
    sql = template.format(
        block=connection.ops.quote_name(Block._meta.db_table),
        transaction=connection.ops.quote_name(Transaction._meta.db_table),
    )
    # Django's cursor sets the current tenant's search_path on the connection;
    # the rows are read with a plain psycopg cursor (server-side parameters,
    # psycopg's C loaders for times), skipping Django's per-value converters.
    with connection.cursor():
        with psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(sql, params, binary=True)
            return cursor.fetchall()


def blocks_with_transactions(
    *, after: int = -1, until: int | None = None, chunk: int = 5000
) -> Iterator[tuple[BlockRow, list[TransactionRow]]]:
    """Stream the current schema's blocks in height order, ``chunk`` at a time,
    so memory stays flat however long the chain grows. Rows are tuples, not
    model instances: verification is bound by how fast they are read."""
    last = after
    upper = _MAX_HEIGHT if until is None else until
    new_block = BlockRow._make
    while last < upper:
        top = min(last + chunk, upper)
        rows = _query(_CHUNK_SQL, (last, top))
        if not rows:
            [(following,)] = _query(_NEXT_SQL, (top, upper))
            if following is None:
                return
            last = following - 1
            continue
        block = None
        items: list[TransactionRow] = []
        for row in rows:
            if block is None or row[0] != block.id:
                if block is not None:
                    yield block, items
                block = new_block(row[:10])
                items = []
            if row[10] is not None:
                payload, plain = _payload(row[13])
                items.append(
                    TransactionRow(
                        row[0],
                        row[10],
                        row[11],
                        row[12],
                        payload,
                        row[14],
                        row[15],
                        row[16],
                        row[17],
                        plain,
                    )
                )
        yield block, items
        last = top


def verify_stream(
    verifier: ChainVerifier, stream: Iterable[tuple[Block, list[Transaction]]]
) -> tuple[Block | None, BlockInvalid | None]:
    """Run the verifier over a stream; return the last good block and the first failure."""
    last_good = None
    for block, transactions in stream:
        try:
            verifier.check(block, transactions)
        except BlockInvalid as failure:
            return last_good, failure
        last_good = block
    return last_good, None
