"""Files vqdraw reads and writes, safely: atomic writes, regular files only, byte caps.

* Writes are atomic (readers see the old file or the new one, never a mix) and only ever replace
  a regular file or nothing: a device node (``/dev/full``), a FIFO or a socket given as an
  output is refused, never turned into a regular file.
* Reads open regular files only (a FIFO would block forever, ``/dev/zero`` never ends) and take
  at most a byte cap fixed before reading.

What goes into model and run folders is :mod:`vqdraw.runs`'s business.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path

from .errors import CheckpointError, PathError

MAX_JSON_BYTES = 1 << 20
MAX_JSON_DEPTH = 32


def describe_os_error(exc: OSError, path: str | Path | None = None) -> str:
    """One line for an operating-system error: the path it concerns, then what went wrong."""
    where = path if path is not None else exc.filename
    why = exc.strerror or exc.__class__.__name__
    if exc.filename2 is not None and path is None:
        return f"{exc.filename} -> {exc.filename2}: {why}"
    return f"{where}: {why}" if where is not None else f"{why} ({exc})".replace("\n", " ")


def check_output_target(path: str | Path) -> None:
    """Refuse to write `path` unless it is missing or a regular file (followed through links):
    vqdraw replaces files, never devices, FIFOs, sockets or folders."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except NotADirectoryError:
        raise PathError(f"{path}: a part of this path is a file, not a folder") from None
    except OSError as exc:
        raise PathError(describe_os_error(exc, path)) from None
    if stat.S_ISDIR(st.st_mode):
        raise PathError(f"{path}: is a folder; give a file name inside it")
    if not stat.S_ISREG(st.st_mode):
        raise PathError(f"{path}: not a regular file (a device, FIFO or socket); vqdraw writes only "
                        "regular files")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a mix.
    `path` must be missing or a regular file (:func:`check_output_target`); a symlink at `path`
    is replaced, never followed."""
    with atomic_writer(path) as f:
        f.write(data)


@contextlib.contextmanager
def atomic_writer(path: str | Path):
    """A binary file object whose contents become `path` in one rename when the ``with`` block
    ends without an error (before that, readers see the old file or none). For outputs written
    piece by piece (a picture of 100,000 samples, a long decoded text), so that memory stays
    bounded by a piece rather than the whole file.

    The file is written as ``.NAME.<pid>.*.tmp`` beside `path` and removed on any error; one
    left by a process that was killed (its pid is gone) is removed by the next write to `path`.
    `path` must be missing or a regular file (:func:`check_output_target`); a symlink at `path`
    is replaced, never followed."""
    path = Path(path)
    check_output_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temporaries(path.parent, path.name)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path.name), suffix=".tmp")
    except OSError as exc:  # name the file asked for, not the temporary one
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def temporary_prefix(name: str) -> str:
    """The start of the name of a temporary file or folder that will become `name`:
    ``.NAME.<pid>.`` (the pid lets a later write tell a killed writer's debris from a live one)."""
    return f".{name[:200]}.{os.getpid()}."


def remove_dead_temporaries(parent: str | Path, name: str) -> None:
    """Remove the temporaries (``.NAME.<pid>.*.tmp``, files or folders) that a write of
    ``parent/name`` killed before its rename left behind: those whose process is gone. A live
    process's temporaries, and anything else, are left alone. Best effort: errors are ignored."""
    import re
    import shutil

    pattern = re.compile(re.escape(f".{name[:200]}.") + r"(\d+)\.[^/]*\.tmp")
    try:
        entries = list(Path(parent).iterdir())
    except OSError:
        return
    for p in entries:
        m = pattern.fullmatch(p.name)
        if not m:
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # alive (or another user's: not ours to remove)
        except ProcessLookupError:
            pass
        except (OSError, OverflowError):
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink()
        except OSError:
            pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def check_input_file(path: str | Path, what: str = "file", max_bytes: int | None = None) -> int:
    """Refuse `path` unless it is a regular file (links followed) of at most `max_bytes`; its
    size. For files handed to another library's reader (Pillow, numpy, safetensors): a FIFO
    would block it forever and a device never ends."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise PathError(f"{path}: no such {what}") from None
    except OSError as exc:
        raise PathError(describe_os_error(exc, path)) from None
    return _check_stat(path, st, what, max_bytes)


def _check_stat(path: Path, st: os.stat_result, what: str, max_bytes: int | None) -> int:
    if stat.S_ISDIR(st.st_mode):
        raise PathError(f"{path}: is a folder, expected {_a(what)}")
    if not stat.S_ISREG(st.st_mode):
        raise PathError(f"{path}: not a regular file (a device, FIFO or socket), expected {_a(what)}")
    if max_bytes is not None and st.st_size > max_bytes:
        raise PathError(f"{path}: {st.st_size:,} bytes, more than the {max_bytes:,} {_a(what)} may have")
    return st.st_size


def read_file_capped(path: str | Path, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of the regular file `path`, refused with one-line :class:`PathError` when it is
    missing, not a regular file (opened without blocking, so a FIFO cannot hang), unreadable, or
    larger than `max_bytes` (decided from its size before reading, and enforced while reading)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise PathError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise PathError(f"{path}: is a folder, expected {_a(what)}") from None
    except OSError as exc:
        raise PathError(describe_os_error(exc, path)) from None
    try:
        _check_stat(path, os.fstat(fd), what, max_bytes)
        chunks, left = [], max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise PathError(describe_os_error(exc, path)) from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:  # it grew while being read
        raise PathError(f"{path}: more than the {max_bytes:,} bytes {_a(what)} may have")
    return data


def _a(what: str) -> str:
    return f"{'an' if what[:1] in 'aeiou' else 'a'} {what}"


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same file (through links, `..`, hard links)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        try:
            return Path(a).resolve() == Path(b).resolve()
        except (OSError, RuntimeError):
            return False


# ---------------------------------------------------------------------------------------------
# Untrusted JSON: bounded size and nesting depth


def read_json(path: str | Path, what: str = "config", max_bytes: int = MAX_JSON_BYTES,
              max_depth: int = MAX_JSON_DEPTH):
    """The JSON object in file ``path``, refusing with one-line :class:`CheckpointError` a file
    that is missing, not a regular file, over ``max_bytes``, not UTF-8, not JSON, nested deeper
    than ``max_depth``, or holding NaN/Infinity."""
    p = Path(path)
    try:
        if not p.is_file():
            raise CheckpointError(f"{p}: {what} file is missing or not a regular file")
        with open(p, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise CheckpointError(f"{p}: cannot read the {what} file ({exc.strerror or exc})") from None
    return parse_json(data, f"{p}", what, max_bytes=max_bytes, max_depth=max_depth)


def parse_json(data: bytes | str, where: str = "JSON", what: str = "config",
               max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH):
    """:func:`json.loads` for untrusted bytes, with the bounds and errors of :func:`read_json`."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if len(data) > max_bytes:
        raise CheckpointError(f"{where}: {what} file is larger than {max_bytes} bytes; not a vqdraw {what}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{where}: {what} file is not UTF-8 text (byte {exc.start})") from None

    def refuse_constant(name: str):
        raise ValueError(f"non-finite number {name}")

    try:
        obj = json.loads(text, parse_constant=refuse_constant)
    except RecursionError:
        raise CheckpointError(f"{where}: {what} file is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, huge integers, NaN/Infinity
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{where}: {what} file is not valid JSON ({first})") from None
    if _depth_exceeds(obj, max_depth):
        raise CheckpointError(f"{where}: {what} file is nested deeper than {max_depth} levels")
    return obj


def _depth_exceeds(obj, limit: int) -> bool:
    stack = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((c, depth + 1) for c in children)
    return False
