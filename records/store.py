"""Content-addressed storage for record ciphertext.

A blob's name is the SHA-256 of its bytes, and the chain records that hash as
the record's pointer. So every read can be checked end to end: whatever the
storage returns must hash to the pointer, or it is refused loudly with
:class:`CiphertextMismatch`. This catches bit rot, a tampered file and a blob
swapped for another record's, none of which AES-GCM alone would attribute to
the store (it would only say "does not decrypt").

Erasure: :meth:`CiphertextStore.delete` removes the file, but on journaled
filesystems and SSDs that is no guarantee the bytes are gone. The real erasure
is cryptographic: destroy every wrap of the data key.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol, runtime_checkable

from django.conf import settings

_NAME = re.compile(r"[0-9a-f]{64}")


class StoreError(Exception):
    """Base class for ciphertext-store failures."""


class CiphertextMismatch(StoreError):
    """Bytes read do not hash to the name or pointer they were asked for."""


class BlobNotFound(StoreError, LookupError):
    """No blob under that name."""


class InvalidBlobName(StoreError, ValueError):
    """Not 64 lowercase hex digits; refused before touching the filesystem."""


def check_name(sha256_hex: str) -> str:
    """Only exact lowercase SHA-256 hex is a name: no paths, no case aliases."""
    if not isinstance(sha256_hex, str) or not _NAME.fullmatch(sha256_hex):
        raise InvalidBlobName(f"not a SHA-256 blob name: {sha256_hex!r:.80}")
    return sha256_hex


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _verify(data: bytes, expected: str, where: str) -> bytes:
    actual = _sha256(data)
    if not hmac.compare_digest(actual, expected):
        raise CiphertextMismatch(
            f"ciphertext {expected} read from {where} hashes to {actual}: "
            "refusing it (tampered, corrupted or swapped)"
        )
    return data


@runtime_checkable
class CiphertextStore(Protocol):
    """Where ciphertext lives, named by its SHA-256 (lowercase hex)."""

    def put(self, data: bytes) -> str:
        """Store ``data`` (idempotently) and return its SHA-256 hex."""
        ...

    def get(self, sha256_hex: str) -> bytes:
        """The bytes, verified against the name; :class:`CiphertextMismatch` if not."""
        ...

    def exists(self, sha256_hex: str) -> bool: ...

    def delete(self, sha256_hex: str) -> None:
        """Remove the blob (no error if it is already gone)."""
        ...


class FileSystemStore:
    """Blobs as files ``root/ab/cd/<hex>``, written atomically with mode 0600.

    Writes go to a temporary file in the same directory, are fsynced and then
    renamed into place with :func:`os.replace`, so a reader never sees a
    half-written blob and a crash leaves at worst a stray temporary file.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"FileSystemStore({str(self.root)!r})"

    def path_for(self, sha256_hex: str) -> Path:
        name = check_name(sha256_hex)
        return self.root / name[:2] / name[2:4] / name

    def put(self, data: bytes) -> str:
        data = bytes(data)
        name = _sha256(data)
        path = self.path_for(name)
        if path.is_file() and not path.is_symlink():
            try:
                self.get(name)
            except CiphertextMismatch:
                pass  # A damaged copy: overwrite it with the good bytes below.
            else:
                return name
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                os.fchmod(handle.fileno(), 0o600)
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        self._fsync_directory(path.parent)
        return name

    def get(self, sha256_hex: str) -> bytes:
        path = self.path_for(sha256_hex)
        try:
            # O_NOFOLLOW: a symlink planted in the store is not followed out of it.
            descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            raise BlobNotFound(f"no ciphertext {sha256_hex} in {self!r}") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StoreError(
                    f"ciphertext {sha256_hex} in {self!r} is a symlink: refusing it"
                ) from None
            raise
        with os.fdopen(descriptor, "rb") as handle:
            data = handle.read()
        return _verify(data, sha256_hex, repr(self))

    def exists(self, sha256_hex: str) -> bool:
        path = self.path_for(sha256_hex)
        return path.is_file() and not path.is_symlink()

    def delete(self, sha256_hex: str) -> None:
        path = self.path_for(sha256_hex)
        # Empty fan-out directories are left in place: removing them would race
        # with a concurrent put() that has just created them.
        path.unlink(missing_ok=True)

    @staticmethod
    def _fsync_directory(directory: Path) -> None:
        # Makes the rename durable; not every platform allows opening a directory.
        try:
            descriptor = os.open(directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(descriptor)
        except OSError:
            pass
        finally:
            os.close(descriptor)


def get_store() -> FileSystemStore:
    """The store at ``MEDPORTAL_BLOB_ROOT`` (default ``<BASE_DIR>/var/blobs``)."""
    root = (
        getattr(settings, "MEDPORTAL_BLOB_ROOT", None) or Path(settings.BASE_DIR) / "var" / "blobs"
    )
    return FileSystemStore(Path(root))


def fetch_verified(store: CiphertextStore, pointer_sha256: str) -> bytes:
    """Read a blob and check it against the chain's pointer ourselves.

    The store is supposed to verify too, but it may be another implementation
    (or swapped under us), so the pointer from the chain is the authority.
    """
    check_name(pointer_sha256)
    data = store.get(pointer_sha256)
    return _verify(bytes(data), pointer_sha256, repr(store))
