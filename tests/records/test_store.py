"""The content-addressed ciphertext store and the check against the chain's pointer."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from records.store import (
    BlobNotFound,
    CiphertextMismatch,
    CiphertextStore,
    FileSystemStore,
    InvalidBlobName,
    StoreError,
    fetch_verified,
    get_store,
)


@pytest.fixture
def store(tmp_path: Path) -> FileSystemStore:
    return FileSystemStore(tmp_path / "blobs")


def test_put_and_get(store):
    data = b"\x00ciphertext\xff" * 100
    name = store.put(data)
    assert name == hashlib.sha256(data).hexdigest()
    assert store.exists(name)
    assert store.get(name) == data
    assert fetch_verified(store, name) == data
    assert store.path_for(name) == store.root / name[:2] / name[2:4] / name
    assert isinstance(store, CiphertextStore)


def test_put_is_idempotent(store):
    first = store.put(b"same bytes")
    second = store.put(b"same bytes")
    assert first == second
    files = [p for p in store.root.rglob("*") if p.is_file()]
    assert files == [store.path_for(first)]  # No stray temporary files either.


def test_put_repairs_a_damaged_copy(store):
    name = store.put(b"good bytes")
    store.path_for(name).write_bytes(b"rotten")
    assert store.put(b"good bytes") == name
    assert store.get(name) == b"good bytes"


def test_blob_file_mode_is_0600(store):
    name = store.put(b"secret-ish")
    assert stat.S_IMODE(store.path_for(name).stat().st_mode) == 0o600


def test_tampered_file_is_refused(store):
    name = store.put(b"original ciphertext")
    path = store.path_for(name)
    tampered = bytearray(path.read_bytes())
    tampered[3] ^= 0x01
    path.write_bytes(bytes(tampered))
    with pytest.raises(CiphertextMismatch, match=name):
        store.get(name)
    with pytest.raises(CiphertextMismatch):
        fetch_verified(store, name)


def test_blob_swapped_for_another_records_is_refused(store):
    pointer_a = store.put(b"record A ciphertext")
    pointer_b = store.put(b"record B ciphertext")
    store.path_for(pointer_a).write_bytes(store.path_for(pointer_b).read_bytes())
    with pytest.raises(CiphertextMismatch):
        fetch_verified(store, pointer_a)
    assert fetch_verified(store, pointer_b) == b"record B ciphertext"


class _LyingStore:
    """A store that does not verify (think: a remote bucket swapped under us)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def put(self, data: bytes) -> str:
        raise NotImplementedError

    def get(self, sha256_hex: str) -> bytes:
        return self.data

    def exists(self, sha256_hex: str) -> bool:
        return True

    def delete(self, sha256_hex: str) -> None:
        raise NotImplementedError


def test_fetch_verified_does_not_trust_the_store():
    pointer = hashlib.sha256(b"what the chain says").hexdigest()
    with pytest.raises(CiphertextMismatch):
        fetch_verified(_LyingStore(b"something else"), pointer)
    assert fetch_verified(_LyingStore(b"what the chain says"), pointer) == b"what the chain says"


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../../etc/passwd",
        "ab/cd",
        "A" * 64,  # upper case: one blob must have one name
        "0" * 63,
        "0" * 65,
        "g" * 64,
        "/" + "0" * 63,
        "0" * 63 + "\n",
        None,
    ],
)
def test_bad_names_are_refused(store, name):
    for operation in (store.get, store.exists, store.delete, store.path_for):
        with pytest.raises(InvalidBlobName):
            operation(name)
    with pytest.raises(InvalidBlobName):
        fetch_verified(store, name)


def test_missing_blob(store):
    name = hashlib.sha256(b"never stored").hexdigest()
    assert not store.exists(name)
    with pytest.raises(BlobNotFound):
        store.get(name)


def test_delete(store):
    keep = store.put(b"keep me")
    name = store.put(b"erase me")
    store.delete(name)
    assert not store.exists(name)
    with pytest.raises(BlobNotFound):
        store.get(name)
    store.delete(name)  # Already gone: fine.
    assert store.get(keep) == b"keep me"
    assert store.root.is_dir()


def test_symlink_in_store_is_not_followed(store, tmp_path):
    outside = tmp_path / "outside"
    outside.write_bytes(b"not in the store")
    name = hashlib.sha256(b"not in the store").hexdigest()
    path = store.path_for(name)
    path.parent.mkdir(parents=True)
    path.symlink_to(outside)
    assert not store.exists(name)
    with pytest.raises(StoreError, match="symlink"):
        store.get(name)


def test_get_store_uses_the_setting(settings, tmp_path):
    settings.MEDPORTAL_BLOB_ROOT = str(tmp_path / "configured")
    configured = get_store()
    assert configured.root == tmp_path / "configured"
    name = configured.put(b"x")
    assert (tmp_path / "configured" / name[:2] / name[2:4] / name).is_file()


def test_get_store_default(settings):
    if hasattr(settings, "MEDPORTAL_BLOB_ROOT"):
        del settings.MEDPORTAL_BLOB_ROOT
    assert get_store().root == Path(settings.BASE_DIR) / "var" / "blobs"
