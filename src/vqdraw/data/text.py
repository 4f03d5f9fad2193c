"""Text as data: characters -> class indices -> (N, L, 1) uint8 sequences for a categorical model.

    encode_characters("héllo")            -> uint8 class indices, one per character
    decode_characters(classes)            -> the text (unknown characters as U+FFFD)
    load_text_embedded("train")           -> Dataset (N, 128, 1): CPython's documentation prose
    load_text_path("notes/", "test")      -> any UTF-8 file or folder of files
    load_wikitext2("train", data_dir)     -> <data_dir>/wikitext2/wiki.{train,valid,test}.raw

Representation: a text model's data are (B, 1, L) class indices k stored as k / 255 (the uint8
value k through :meth:`Dataset.batch`), read back by the categorical likelihood with
``categories = 256`` as round(x * 255) = k. So text needs nothing from the core beyond rank-1 data.

Vocabulary (fixed, so a model folder and a ``.vqd`` file need no stored vocabulary): 256 classes,
class k is the Latin-1 character k, except that the control slots no English text uses (0x01-0x08,
0x0B-0x1F, 0x7F-0x9F) are given to the typographic characters common in English prose outside
Latin-1 (curly quotes, dashes, ellipsis, bullets, ...; :data:`EXTRA_CHARACTERS`). Class 0 is
"unknown": any other character maps there, except that a character whose compatibility
decomposition (NFKD) starts with a known character maps to that one (e.g. "ő" -> "o").
(The paper author's rule, every character of WikiText-2's training split by frequency, depends
on the data and would have to be stored with each model; this one does not.)
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from pathlib import Path

import numpy as np

from .base import DatasetError, Dataset
from .walk import files_under

SEQUENCE_LENGTH = 128
"""Characters per sequence (the ``text`` preset's data length)."""
UNKNOWN = 0
"""The class of characters outside the vocabulary; decoded as U+FFFD."""
UNKNOWN_CHARACTER = "\ufffd"

EXTRA_CHARACTERS = "‘’‚“”„–—―…•′″‹›€™−≤≥≠≈→←↑↓∞√†‡‰ﬁﬂ"
"""Characters outside Latin-1 given the unused control slots, in slot order."""

_FREE_SLOTS = [k for k in range(1, 0xA0) if k not in (9, 10) and not 0x20 <= k < 0x7F]


def _vocabulary() -> str:
    table = [chr(k) for k in range(256)]
    table[UNKNOWN] = UNKNOWN_CHARACTER
    for slot, ch in zip(_FREE_SLOTS, EXTRA_CHARACTERS):
        table[slot] = ch
    return "".join(table)


VOCABULARY = _vocabulary()
"""Class k -> character VOCABULARY[k]; 256 classes."""
VOCAB_SIZE = len(VOCABULARY)
_INDEX = {ch: k for k, ch in enumerate(VOCABULARY) if k != UNKNOWN}


@lru_cache(maxsize=4096)
def _class_of(ch: str) -> int:
    k = _INDEX.get(ch)
    if k is not None:
        return k
    folded = unicodedata.normalize("NFKD", ch)[:1]
    return _INDEX.get(folded, UNKNOWN)


def encode_characters(text: str) -> np.ndarray:
    """One uint8 class index per character of ``text``."""
    return np.fromiter((_class_of(ch) for ch in text), dtype=np.uint8, count=len(text))


def decode_characters(classes) -> str:
    """The characters of class indices (any integer array-like in 0..255)."""
    return "".join(VOCABULARY[int(k)] for k in np.asarray(classes).reshape(-1))


def to_sequences(text: str, length: int = SEQUENCE_LENGTH, *, pad: bool = False) -> np.ndarray:
    """(N, length, 1) uint8 class sequences of consecutive, non-overlapping chunks of ``text``.

    ``pad=False`` drops a last partial chunk; ``pad=True`` fills it with spaces (class 32).
    """
    classes = encode_characters(text)
    n = len(classes) // length if not pad else -(-len(classes) // length)
    out = np.full((n * length,), ord(" "), dtype=np.uint8)
    out[: min(len(classes), n * length)] = classes[: n * length]
    return out.reshape(n, length, 1)


def sequences_to_text(data) -> list[str]:
    """Model data (B, 1, L) of class indices scaled to [0, 1] (a tensor or array) -> B strings."""
    arr = np.asarray(data.detach().cpu() if hasattr(data, "detach") else data, dtype=np.float64)
    classes = np.clip(np.rint(arr * (VOCAB_SIZE - 1)), 0, VOCAB_SIZE - 1).astype(np.int64)
    return [decode_characters(row) for row in classes.reshape(len(classes), -1)]


def text_to_data(text: str, length: int = SEQUENCE_LENGTH):
    """A text as model data: float (N, 1, length) in [0, 1], the last chunk padded with spaces."""
    import torch

    seqs = to_sequences(text, length, pad=True)
    return torch.from_numpy(seqs).permute(0, 2, 1).float().div_(VOCAB_SIZE - 1)


def read_text_file(path: str | Path) -> str:
    """A UTF-8 file's text; one clear DatasetError line for bytes that are not UTF-8."""
    from ..errors import PathError
    from ..io import read_file_capped
    from .capped import MAX_TEXT_BYTES

    p = Path(path)
    try:
        raw = read_file_capped(p, MAX_TEXT_BYTES, "text file")  # regular files only: a FIFO never ends
    except PathError as exc:
        raise DatasetError(str(exc)) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{p}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                           "convert it to UTF-8 first, e.g. iconv -t UTF-8") from None


def read_text_path(path: str | Path) -> str:
    """The text of a UTF-8 file, or of every file under a folder (sorted, joined by newlines): at
    most :data:`~vqdraw.data.capped.MAX_TEXT_BYTES` in all, decided from the files' sizes before
    any is read."""
    return read_text_paths([path])


def read_text_paths(paths) -> str:
    """The text of the files and folders ``paths`` (each folder's files sorted), joined by
    newlines; refused with one DatasetError line before reading when their sizes add up to more
    than :data:`~vqdraw.data.capped.MAX_TEXT_BYTES` (the cap of one text file holds for them all)."""
    from .capped import MAX_TEXT_BYTES

    files = []
    for p in map(Path, paths):
        if p.is_dir():
            found = [q for q in files_under(p) if not q.name.startswith(".")]
            if not found:
                raise DatasetError(f"{p}: no text files in this folder")
            files += found
        elif not p.exists():
            raise DatasetError(f"{p}: no such file or folder")
        else:
            files.append(p)
    total = 0
    for f in files:
        try:
            total += f.stat().st_size
        except OSError:
            continue  # read_text_file says why, in one line
    if total > MAX_TEXT_BYTES:
        raise DatasetError(f"{', '.join(map(str, paths))[:200]}: {total:,} bytes of text in {len(files)} "
                           f"file{'s' if len(files) != 1 else ''}, more than the {MAX_TEXT_BYTES:,} bytes "
                           "one command reads; split the text")
    return "\n".join(read_text_file(f) for f in files)


def _split(text: str, split: str, name: str) -> Dataset:
    """The first 90% of a text's characters are 'train', the last 10% 'test'."""
    if split not in ("train", "test"):
        raise DatasetError(f"{name}: unknown split {split!r} (train or test)")
    cut = len(text) * 9 // 10
    part = text[:cut] if split == "train" else text[cut:]
    seqs = to_sequences(part)
    if not len(seqs):
        raise DatasetError(f"{name}: the {split} split has fewer than {SEQUENCE_LENGTH} characters")
    return Dataset(seqs, None, name)


def rechunk(dataset: Dataset, length: int) -> Dataset:
    """A text dataset's sequences cut into consecutive chunks of ``length`` characters (a model of
    another sequence length than the datasets' 128): ``length`` must divide the datasets' length."""
    have = dataset.data.shape[1]
    if length == have:
        return dataset
    if length < 1 or have % length:
        raise DatasetError(f"{dataset.name}: its sequences are {have} characters; a text model of length "
                           f"{length} needs a length that divides {have}")
    seqs = np.ascontiguousarray(dataset.data.reshape(-1, length, dataset.data.shape[2]))
    return Dataset(seqs, None, dataset.name)


def embedded_text() -> str:
    """The documentation prose every CPython ships (``pydoc_data.topics``), topics in name order."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # pragma: no cover - some distributions strip it
        raise DatasetError("text-embedded needs pydoc_data (part of CPython's standard library), "
                           "which this Python lacks; use text:PATH") from None
    return "\n".join(topics[k] for k in sorted(topics))


def load_text_embedded(split: str = "train", data_dir=None) -> Dataset:
    return _split(embedded_text(), split, "text-embedded")


def load_text_path(path: str | Path, split: str = "train") -> Dataset:
    return _split(read_text_path(path), split, f"text:{path}")


WIKITEXT2_FILES = {"train": "wiki.train.raw", "valid": "wiki.valid.raw", "test": "wiki.test.raw"}
WIKITEXT2_ZIP, WIKITEXT2_DIR = "wikitext-2-raw-v1.zip", "wikitext-2-raw"


def load_wikitext2(split: str = "train", data_dir: str | Path | None = None) -> Dataset:
    """WikiText-2 (raw, character level) from ``<data_dir>/wikitext2/``: the three unpacked files
    ``wiki.<split>.raw``, or ``wikitext-2-raw-v1.zip`` itself (``vqdraw datasets --download
    wikitext2`` fetches it and checks its SHA-256), read in place."""
    import zipfile

    from .capped import MAX_MEMBER_BYTES, read_zip_member  # the train file is 10.9 MB
    from .download import dataset_dir, missing_error

    if split not in WIKITEXT2_FILES:
        raise DatasetError(f"wikitext2: unknown split {split!r} ({', '.join(WIKITEXT2_FILES)})")
    folder = dataset_dir("wikitext2", data_dir)
    path, archive = folder / WIKITEXT2_FILES[split], folder / WIKITEXT2_ZIP
    if path.is_file():
        text, where = read_text_file(path), str(path)
    elif archive.is_file():
        member = f"{WIKITEXT2_DIR}/{WIKITEXT2_FILES[split]}"
        where = f"{archive}:{member}"
        try:
            with zipfile.ZipFile(archive) as z:
                raw = read_zip_member(z, member, MAX_MEMBER_BYTES, where=where, what="a WikiText-2 file",
                                      missing="not in the zip; not the official archive")
        except (zipfile.BadZipFile, OSError) as exc:
            raise DatasetError(f"{archive}: cannot read it as a zip ({exc}); download it again") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{where}: not UTF-8 text (offset {exc.start})") from None
    else:
        raise missing_error("wikitext2", folder, [WIKITEXT2_ZIP],
                            reason=f"wikitext2: no {WIKITEXT2_ZIP} or {WIKITEXT2_FILES[split]} in {folder}")
    seqs = to_sequences(text)
    if not len(seqs):
        raise DatasetError(f"wikitext2: {where} has fewer than {SEQUENCE_LENGTH} characters")
    return Dataset(seqs, None, f"wikitext2-{split}")
