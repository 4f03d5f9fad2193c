"""Reading untrusted dataset files with a bound on what they expand to.

A 23 MB gzip file can expand to 5 GiB. Every reader of a compressed dataset file goes through
:func:`open_capped`, whose stream raises a one-line :class:`DatasetError` as soon as more than
``limit`` bytes would come out (and refuses a seek past it, which tarfile uses to skip members),
instead of running out of memory. Uncompressed files are checked by their size on disk.

Limits per file (documented in docs/robustness.md): :data:`MAX_IDX_BYTES` for an IDX file,
:data:`MAX_TAR_BYTES` for the whole uncompressed CIFAR-10 tar stream and
:data:`MAX_MEMBER_BYTES` for one member of an archive (a CIFAR batch, a CelebA JPEG, a WikiText-2
file; zip members are read by :func:`read_zip_member`).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import zipfile
import zlib
from pathlib import Path

from .base import DatasetError

MAX_IDX_BYTES = 256 << 20  # MNIST's largest file is 47,040,016 bytes
MAX_TAR_BYTES = 512 << 20  # cifar-10-python.tar.gz holds about 178 MiB
MAX_MEMBER_BYTES = 64 << 20  # a CIFAR-10 batch is about 30 MiB; a CelebA JPEG about 10 KiB; WikiText-2's train file 10.9 MB
MAX_TEXT_BYTES = 64 << 20  # CelebA's list_eval_partition.txt is 2.8 MB


class CappedReader(io.RawIOBase):
    """A read-only view of a (decompressing) stream that refuses to yield more than ``limit`` bytes."""

    def __init__(self, raw, limit: int, where: str):
        super().__init__()
        self._raw, self._limit, self._where = raw, int(limit), where
        self._pos = 0

    def _too_big(self) -> DatasetError:
        return DatasetError(f"{self._where}: expands to more than {self._limit:,} bytes, more than this "
                            "dataset file can hold; it is damaged or not the official file, delete it")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        room = self._limit - self._pos + 1  # one byte over the limit proves the file too big
        data = self._raw.read(room if size is None or size < 0 else min(size, room))
        self._pos += len(data)
        if self._pos > self._limit:
            raise self._too_big()
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("CappedReader seeks from the start or the current position only")
        if offset > self._limit:
            raise self._too_big()
        self._pos = self._raw.seek(offset)
        return self._pos


@contextlib.contextmanager
def open_capped(path: Path, limit: int):
    """A binary stream of ``path`` (gunzipped when it ends in ``.gz``) that yields at most ``limit``
    bytes; DatasetError (one line) for a larger file. OSError/EOFError/zlib.error pass through."""
    path = Path(path)
    if path.suffix != ".gz":
        size = path.stat().st_size
        if size > limit:
            raise DatasetError(f"{path}: {size:,} bytes, more than the {limit:,} this dataset file can hold; "
                               "it is not the official file")
        with open(path, "rb") as fh:
            yield fh
        return
    with gzip.open(path, "rb") as gz:
        yield CappedReader(gz, limit, str(path))


def read_capped(path: Path, limit: int) -> bytes:
    """All the (gunzipped) bytes of ``path``, at most ``limit`` of them (DatasetError otherwise)."""
    with open_capped(path, limit) as fh:
        return fh.read()


def read_zip_member(archive: zipfile.ZipFile, member: str, limit: int, *, where: str, what: str,
                    missing: str) -> bytes:
    """One member of an open zip, refused (one-line DatasetError) when its directory entry says it
    holds more than ``limit`` bytes (zipfile never inflates past that size), when it is absent
    (``missing`` says why that matters) or when it cannot be read. ``where`` names it in messages,
    ``what`` says what it should be ("a CelebA image")."""
    try:
        info = archive.getinfo(member)
        if info.file_size > limit:
            raise DatasetError(f"{where}: {info.file_size:,} bytes, more than {what} can hold ({limit:,}); "
                               "not the official archive")
        return archive.read(info)
    except KeyError:
        raise DatasetError(f"{where}: {missing}") from None
    except (zipfile.BadZipFile, zlib.error, OSError) as exc:
        raise DatasetError(f"{where}: cannot read it from the zip ({exc})") from exc
