"""Listing the folders given as inputs: the one folder walker.

    files_under(folder)      every regular file under `folder`, recursively, sorted
    with one_walk(): ...     inside, a folder is listed once however many times it is asked for

A verb asks about an input folder more than once (which kind of data it holds, then its files);
the CLI runs each command inside :func:`one_walk`, so the folder is walked once per command, and
what the checks saw is what is encoded. Outside one, every call lists the folder afresh (a
long-running program sees files added since).
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

_LISTINGS: ContextVar[dict | None] = ContextVar("vqdraw_folder_listings", default=None)


def files_under(folder) -> list[Path]:
    """Every regular file under ``folder`` (recursively, sorted by path)."""
    folder = Path(folder)
    listings = _LISTINGS.get()
    if listings is None:
        return _walk(folder)
    if folder not in listings:
        listings[folder] = _walk(folder)
    return listings[folder]


def _walk(folder: Path) -> list[Path]:
    return sorted(q for q in folder.rglob("*") if q.is_file())


@contextmanager
def one_walk():
    """Within this block each folder is listed once (nested blocks share the outer one's listings)."""
    if _LISTINGS.get() is not None:
        yield
        return
    token = _LISTINGS.set({})
    try:
        yield
    finally:
        _LISTINGS.reset(token)
