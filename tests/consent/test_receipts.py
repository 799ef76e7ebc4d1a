"""``verify_receipt``: a consent receipt downloaded from the Sharing page checks
out against the hub's chain, and any change to it is found and named."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django_tenants.utils import get_public_schema_name, schema_context

from chain.encoding import transaction_hash
from chain.models import Transaction
from chain.services import block_seal
from tests.conftest import PASSWORD, login_client

pytestmark = pytest.mark.django_db


def _grant_receipt(alpha) -> tuple[object, str]:
    """Li Wei shares her labs with beta through the Sharing page: (client, tx hash)."""
    client = login_client(alpha, "alpha-patient")
    response = client.post(
        "/consent/sharing/",
        {
            "action": "grant",
            "grantee": "tenant:beta",
            "categories": ["labs"],
            "purpose": "research",
            "password": PASSWORD,
        },
    )
    assert response.status_code == 302, response.content
    return client, response["Location"].rsplit("receipt=", 1)[1]


def _download(client, tx_hash: str) -> dict:
    response = client.get(f"/consent/receipts/{tx_hash}/")
    assert response.status_code == 200
    return response.json()


def _sealed_receipt(alpha) -> dict:
    client, tx_hash = _grant_receipt(alpha)
    with schema_context(get_public_schema_name()):
        block_seal(force=True)
    receipt = _download(client, tx_hash)
    assert receipt["block_height"] is not None
    return receipt


def _write(tmp_path: Path, receipt: dict) -> str:
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipt, indent=2))
    return str(path)


def _verify(path: str) -> str:
    out = StringIO()
    call_command("verify_receipt", path, stdout=out)
    return out.getvalue()


def _refused(path: str) -> CommandError:
    with pytest.raises(CommandError) as raised:
        _verify(path)
    return raised.value


def _rehash(receipt: dict) -> dict:
    """The receipt with ``hash`` recomputed from its (changed) envelope."""
    receipt["hash"] = transaction_hash(
        kind=receipt["kind"],
        author=receipt["author"],
        payload=receipt["payload"],
        timestamp=datetime.fromisoformat(receipt["timestamp"]),
        signature=receipt["signature"],
    )
    return receipt


def test_a_sealed_receipt_is_valid(alpha, tmp_path):
    receipt = _sealed_receipt(alpha)
    output = _verify(_write(tmp_path, receipt))
    assert output == (f"valid: access {receipt['hash']} in block {receipt['block_height']}\n")
    with schema_context(get_public_schema_name()):
        sealed = Transaction.objects.select_related("block").get(hash=receipt["hash"])
    assert (sealed.block.height, sealed.block.hash) == (
        receipt["block_height"],
        receipt["block_hash"],
    )


def test_a_changed_payload_is_a_hash_mismatch(alpha, tmp_path):
    receipt = _sealed_receipt(alpha)
    receipt["payload"]["categories"] = ["labs", "mental_health"]
    error = _refused(_write(tmp_path, receipt))
    assert error.returncode == 1
    assert str(error).startswith("hash mismatch: the envelope hashes to ")
    assert str(error).endswith(f"the receipt says {receipt['hash']}")


def test_a_changed_signature_is_a_bad_signature(alpha, tmp_path):
    receipt = _sealed_receipt(alpha)
    signature = bytearray(base64.b64decode(receipt["signature"]))
    signature[0] ^= 0x01
    receipt["signature"] = base64.b64encode(bytes(signature)).decode("ascii")
    error = _refused(_write(tmp_path, _rehash(receipt)))  # only the signature is wrong
    assert error.returncode == 1
    assert str(error) == (
        f"bad signature: not signed by the registered key {receipt['author']} (patient)"
    )


def test_a_wrong_block_height_is_refused(alpha, tmp_path):
    receipt = _sealed_receipt(alpha)
    actual = receipt["block_height"]
    receipt["block_height"] = actual - 1
    error = _refused(_write(tmp_path, receipt))
    assert error.returncode == 1
    assert str(error) == (
        f"wrong block: the receipt says height {actual - 1} (hash {receipt['block_hash']}), "
        f"the chain holds the transaction in block {actual} (hash {receipt['block_hash']})"
    )


def test_a_wrong_block_hash_is_refused(alpha, tmp_path):
    receipt = _sealed_receipt(alpha)
    receipt["block_hash"] = "0" * 64
    error = _refused(_write(tmp_path, receipt))
    assert error.returncode == 1
    assert str(error).startswith("wrong block: ")


def test_an_unsealed_receipt_is_pending(alpha, tmp_path):
    client, tx_hash = _grant_receipt(alpha)
    receipt = _download(client, tx_hash)
    assert receipt["block_height"] is None
    path = _write(tmp_path, receipt)
    error = _refused(path)
    assert error.returncode == 2
    assert str(error) == (
        f"pending: access {tx_hash} is signed correctly and accepted by the hub but not "
        "yet in a block; run again once sealed"
    )
    # Once sealed, the same file verifies (the chain says which block).
    with schema_context(get_public_schema_name()):
        block_seal(force=True)
        height = Transaction.objects.select_related("block").get(hash=tx_hash).block.height
    assert _verify(path).startswith(f"valid: access {tx_hash} in block {height} (")


def test_a_missing_file_is_a_clear_error(tmp_path):
    error = _refused(str(tmp_path / "nowhere.json"))
    assert error.returncode == 1
    assert str(error) == f"cannot read {tmp_path / 'nowhere.json'}: No such file or directory"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not JSON: "),
        ("[1, 2]", "is not a consent receipt: expected a JSON object"),
        ('{"kind": "access"}', "is not a consent receipt: 'author' is missing or not text"),
    ],
)
def test_a_malformed_receipt_is_a_clear_error(tmp_path, text, message):
    path = tmp_path / "receipt.json"
    path.write_text(text)
    error = _refused(str(path))
    assert error.returncode == 1
    assert message in str(error)
