"""Check a consent receipt (the JSON the Sharing page downloads) against the hub's chain.

Exit codes: 0 valid; 1 invalid (the receipt cannot be read, or a check
failed: the message names which); 2 pending (the envelope is sound and the hub
holds the transaction, but it is not sealed in a block yet).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django_tenants.utils import get_public_schema_name, schema_context

from chain.encoding import (
    EncodingError,
    block_hash,
    block_signing_bytes,
    transaction_hash,
    transaction_signing_bytes,
)
from chain.keys import verify
from chain.merkle import inclusion_proof, verify_inclusion
from chain.models import Block, PendingTransaction, RegisteredKey, Transaction

TEXT_FIELDS = ("kind", "author", "timestamp", "signature", "hash")
INVALID = 1
PENDING = 2


def _invalid(message: str) -> CommandError:
    return CommandError(message, returncode=INVALID)


def _read(path: str) -> dict:
    """The receipt as a dict with the fields checked for type; CommandError otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise _invalid(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
    try:
        receipt = json.loads(text)
    except json.JSONDecodeError as error:
        raise _invalid(f"{path} is not JSON: {error}") from None
    if not isinstance(receipt, dict):
        raise _invalid(f"{path} is not a consent receipt: expected a JSON object")
    for name in TEXT_FIELDS:
        if not isinstance(receipt.get(name), str):
            raise _invalid(f"{path} is not a consent receipt: {name!r} is missing or not text")
    if not isinstance(receipt.get("payload"), dict):
        raise _invalid(f"{path} is not a consent receipt: 'payload' is missing or not an object")
    height = receipt.get("block_height")
    if height is not None and (type(height) is not int or height < 0):
        raise _invalid(f"{path} is not a consent receipt: 'block_height' is not a height")
    if not isinstance(receipt.get("block_hash"), (str, type(None))):
        raise _invalid(f"{path} is not a consent receipt: 'block_hash' is not text")
    try:
        moment = datetime.fromisoformat(receipt["timestamp"])
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise _invalid(f"{path} is not a consent receipt: 'timestamp' is not an ISO 8601 time")
    receipt["timestamp"] = moment
    return receipt


def _key_valid_at(key: RegisteredKey, height: int | None) -> bool:
    """Registered by ``height`` and not revoked before it (None: now, while pending).
    A key rotated away later still vouches for what it signed while it was current."""
    if height is None:
        return key.revoked_height is None
    return key.registered_height <= height and (
        key.revoked_height is None or key.revoked_height > height
    )


def _check_envelope(receipt: dict) -> RegisteredKey:
    """The hash and the author's signature; the author's registered key."""
    envelope = {name: receipt[name] for name in ("kind", "author", "payload", "timestamp")}
    try:
        recomputed = transaction_hash(**envelope, signature=receipt["signature"])
    except EncodingError as error:
        raise _invalid(
            f"hash mismatch: the envelope cannot be encoded canonically ({error})"
        ) from None
    if recomputed != receipt["hash"]:
        raise _invalid(
            f"hash mismatch: the envelope hashes to {recomputed}, the receipt says "
            f"{receipt['hash']}"
        )
    key = RegisteredKey.objects.filter(key_id=receipt["author"]).first()
    if key is None:
        raise _invalid(
            f"bad signature: the author key {receipt['author']} is not registered on the chain"
        )
    if not verify(key.public_key, receipt["signature"], transaction_signing_bytes(**envelope)):
        raise _invalid(
            f"bad signature: not signed by the registered key {key.key_id} ({key.owner_type})"
        )
    return key


def _check_block(receipt: dict, found: Transaction, author_key: RegisteredKey) -> Block:
    block = found.block
    stated_height, stated_hash = receipt["block_height"], receipt["block_hash"]
    if stated_height is not None and (stated_height, stated_hash) != (block.height, block.hash):
        raise _invalid(
            f"wrong block: the receipt says height {stated_height} (hash {stated_hash}), "
            f"the chain holds the transaction in block {block.height} (hash {block.hash})"
        )
    if not _key_valid_at(author_key, block.height):
        raise _invalid(
            f"bad signature: the author key {author_key.key_id} was not current "
            f"at height {block.height}"
        )
    hashes = list(
        Transaction.objects.filter(block=block).order_by("index").values_list("hash", flat=True)
    )
    is_included = len(hashes) == block.transaction_count and verify_inclusion(
        found.hash,
        found.index,
        len(hashes),
        inclusion_proof(hashes, found.index),
        block.merkle_root,
    )
    if not is_included:
        raise _invalid(
            f"not in the Merkle root: block {block.height}'s root does not include the "
            "transaction (run verify_chain)"
        )
    header = block.header_fields()
    if block_hash(hub_signature=block.hub_signature, **header) != block.hash:
        raise _invalid(
            f"wrong block: block {block.height} does not match its hash (run verify_chain)"
        )
    hub_keys = RegisteredKey.objects.filter(owner_type=RegisteredKey.OwnerType.HUB)
    signing_bytes = block_signing_bytes(**header)
    if not any(
        _key_valid_at(key, block.height)
        and verify(key.public_key, block.hub_signature, signing_bytes)
        for key in hub_keys
    ):
        raise _invalid(f"bad hub signature: block {block.height} is not signed by the hub's key")
    return block


class Command(BaseCommand):
    help = (
        "Check a consent receipt against the hub's chain: the transaction hash, the "
        "patient's signature (their registered key), the block it is sealed in, the "
        "block's Merkle root and hub signature. Exit 0 valid, 1 invalid, 2 not yet "
        "sealed."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="the receipt JSON downloaded from the Sharing page")

    def handle(self, *args, file: str, **options) -> None:
        receipt = _read(file)
        with schema_context(get_public_schema_name()):
            author_key = _check_envelope(receipt)
            found = Transaction.objects.select_related("block").filter(hash=receipt["hash"]).first()
            if found is None:
                if PendingTransaction.objects.filter(hash=receipt["hash"]).exists():
                    raise CommandError(
                        f"pending: {receipt['kind']} {receipt['hash']} is signed correctly and "
                        "accepted by the hub but not yet in a block; run again once sealed",
                        returncode=PENDING,
                    )
                raise _invalid(f"not on the chain: no transaction {receipt['hash']} on the hub")
            block = _check_block(receipt, found, author_key)
        note = (
            " (the receipt was downloaded before sealing: download it again to keep the block)"
            if receipt["block_height"] is None
            else ""
        )
        self.stdout.write(
            f"valid: {receipt['kind']} {receipt['hash']} in block {block.height}{note}"
        )
