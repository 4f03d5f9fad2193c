"""Where datasets live, what their official files are, and how to fetch and check them.

Layout: ``<data dir>/<dataset name>/<official file name>``. The data dir is ``--data-dir``, else
``$VQDRAW_DATA``, else ``$XDG_CACHE_HOME/vqdraw`` (normally ``~/.cache/vqdraw``). A dataset that a
system package installs (Debian's ``dataset-fashion-mnist``: SYSTEM_DIRS) is read from the
package's folder when the data dir lacks some of its files and the package's folder has them all.

Downloads use urllib only. A download goes into ``<file>.part`` (resumed with an HTTP Range
request when a ``.part`` is already there), is checked against the official md5, and only then
renamed to its final name, so a file under its final name is always complete. Loaders validate
files by format; md5 checks happen on request (:func:`verify`).
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .base import DatasetError

_CHUNK = 1 << 20
_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RemoteFile:
    """One official file: its name on disk, where to get it, its published md5.

    ``also`` lists other names that stand in for it (an uncompressed or extracted copy).
    """

    name: str
    url: str | None
    md5: str
    also: tuple[str, ...] = ()
    also_md5: tuple[tuple[str, str], ...] = ()
    """Published md5s of files under the stand-in names, as (path in the dataset folder, md5)."""
    sha256: str = ""
    """Where only a SHA-256 is published (WikiText-2), it is checked instead of ``md5`` ("")."""

    def checksum(self, path: Path) -> tuple[str, str, str]:
        """(algorithm, digest of the file at `path`, the official digest)."""
        if self.sha256:
            return "sha256", file_digest(path, "sha256"), self.sha256
        return "md5", md5sum(path), self.md5


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    files: tuple[RemoteFile, ...]
    manual: str | None = None  # set where there is no stable direct URL


def _idx_files(base: str, md5s: tuple[str, str, str, str]) -> tuple[RemoteFile, ...]:
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    return tuple(RemoteFile(f"{n}.gz", f"{base}{n}.gz", m, (n,)) for n, m in zip(names, md5s))


# md5s of the extracted CIFAR-10 batches (the same values torchvision checks)
_CIFAR_BATCH_MD5S = tuple((f"cifar-10-batches-py/{n}", m) for n, m in (
    ("data_batch_1", "c99cafc152244af753f735de768cd75f"), ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
    ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"), ("data_batch_4", "634d18415352ddfa80567beed471001a"),
    ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"), ("test_batch", "40351d587109b95175f43aff81a1287e")))

CATALOGUE: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("mnist", "MNIST digits, 28x28x1, 60k/10k", _idx_files(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
             "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"))),
        DatasetSpec("fashion-mnist", "Fashion-MNIST, 28x28x1, 60k/10k", _idx_files(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
             "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"))),
        DatasetSpec("cifar10", "CIFAR-10, 32x32x3, 50k/10k", (
            RemoteFile("cifar-10-python.tar.gz",
                       "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                       "c58f30108f718f92721af3b95e74349a", ("cifar-10-batches-py",),
                       _CIFAR_BATCH_MD5S),)),
        DatasetSpec("svhn", "SVHN cropped digits, 32x32x3, 73k/26k", (
            RemoteFile("train_32x32.mat", "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
                       "e26dedcc434d2e4c54c9b2d4a06d8373"),
            RemoteFile("test_32x32.mat", "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
                       "eb5a983be6a315427106f1b69d6a8d1f"))),
        DatasetSpec("celeba", "CelebA aligned faces, 64x64x3, 163k/20k", (
            RemoteFile("img_align_celeba.zip", None, "00d2c5bc6d35e252742224ab0c1e8fcb",
                       ("img_align_celeba",)),
            RemoteFile("list_eval_partition.txt", None, "d32c9cbf5e040fd4025c592c306e6668")),
            manual="CelebA has no stable direct download (it is on Google Drive): get "
                   "img_align_celeba.zip and list_eval_partition.txt from "
                   "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"),
        # WikiText-2 raw (Merity et al. 2016, CC BY-SA 3.0). The original S3 bucket
        # (research.metamind.io) is gone; this is the copy llama.cpp's get-wikitext-2.sh fetches. Its
        # published SHA-256 (also in Hugging Face's wikitext dataset card) pins the bytes.
        DatasetSpec("wikitext2", "WikiText-2 raw, characters, 10.9M/1.3M", (
            RemoteFile("wikitext-2-raw-v1.zip",
                       "https://huggingface.co/datasets/ggml-org/ci/resolve/main/wikitext-2-raw-v1.zip",
                       "", ("wiki.train.raw",),
                       sha256="ef7edb566e3e2b2d31b29c1fdb0c89a4cc683597484c3dc2517919c615435a11"),)),
    )
}


def default_data_dir() -> Path:
    """``$VQDRAW_DATA`` if set, else the per-user cache ``~/.cache/vqdraw``."""
    env = os.environ.get("VQDRAW_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "vqdraw"


def spec(name: str) -> DatasetSpec:
    if name not in CATALOGUE:
        raise DatasetError(f"no downloadable dataset {name!r}; known: {', '.join(CATALOGUE)}")
    return CATALOGUE[name]


def dataset_dir(name: str, data_dir: str | Path | None = None) -> Path:
    """The folder dataset `name` is read from: ``<data dir>/<name>``."""
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    return root / spec(name).name


# Datasets that a system package installs: name -> (its folder, the Debian package).
SYSTEM_DIRS: dict[str, tuple[Path, str]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"), "dataset-fashion-mnist"),
}


def read_dir(name: str, data_dir: str | Path | None = None) -> Path:
    """The folder dataset `name` is read from: ``<data dir>/<name>`` when it holds every file, else
    the system package's folder (SYSTEM_DIRS) when that holds every file, else ``<data dir>/<name>``
    (so that errors name the folder the user controls)."""
    folder = dataset_dir(name, data_dir)
    if name in SYSTEM_DIRS and not _complete(folder, name) and _complete(SYSTEM_DIRS[name][0], name):
        return SYSTEM_DIRS[name][0]
    return folder


def _complete(folder: Path, name: str) -> bool:
    return all(_present_as(folder, f) is not None for f in spec(name).files)


def _present_as(folder: Path, f: RemoteFile) -> str | None:
    """The name under which `f` (or a stand-in for it) is present in `folder`, else None."""
    for candidate in (f.name, *f.also):
        if (folder / candidate).exists():
            return candidate
    return None


@dataclass
class DatasetStatus:
    name: str
    folder: Path
    files: list[tuple[str, str | None]]  # (official name, name present under or None)

    @property
    def missing(self) -> list[str]:
        return [name for name, have in self.files if have is None]

    @property
    def complete(self) -> bool:
        return not self.missing


def status(name: str, data_dir: str | Path | None = None) -> DatasetStatus:
    """Which of dataset `name`'s files are present (a ``.part`` never counts), in the folder it is
    read from (:func:`read_dir`)."""
    folder = read_dir(name, data_dir)
    return DatasetStatus(name, folder, [(f.name, _present_as(folder, f)) for f in spec(name).files])


def _where_to_get(s: DatasetSpec, names: list[str]) -> str:
    if s.manual:
        return s.manual
    urls = [f.url for f in s.files if f.name in names]
    bases = {u[: -len(n)] for u, n in zip(urls, names) if u.endswith(n)}
    if len(bases) == 1 and all(u.endswith(n) for u, n in zip(urls, names)):
        return f"get {', '.join(names)} from {bases.pop()}"
    return "get " + ", ".join(f"{n} from {u}" for n, u in zip(names, urls))


def missing_error(name: str, folder: Path, missing: list[str] | None = None,
                  reason: str = "") -> DatasetError:
    """The one-line error for absent files: what is missing, where to get it, where to put it."""
    s = spec(name)
    names = missing if missing is not None else [f.name for f in s.files]
    head = reason or f"{s.name}: missing {', '.join(names)} in {folder}"
    hint = "" if s.manual else f" (or run: vqdraw datasets --download {s.name})"
    if s.name in SYSTEM_DIRS:
        hint += f"; or install the system package: apt install {SYSTEM_DIRS[s.name][1]}"
    return DatasetError(f"{head}; {_where_to_get(s, names)} and put them in {folder}/{hint}")


def md5sum(path: Path) -> str:
    return file_digest(path, "md5")


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify(name: str, data_dir: str | Path | None = None) -> list[tuple[str, bool | None, str]]:
    """md5-check the files of dataset `name` that are present: a list of (file, ok, message).

    ``ok`` is True (md5s match), False (missing or not matching) or None (unverified: an
    uncompressed or extracted stand-in for which no md5 is published).
    """
    folder = read_dir(name, data_dir)
    if folder != dataset_dir(name, data_dir):  # the system package's copy: its own checksums
        package = SYSTEM_DIRS[name][1]
        return [(f.name, None, f"unverified: installed by the system package {package} in {folder}, whose "
                 f"files need not be the official downloads byte for byte; dpkg --verify {package} checks them")
                for f in spec(name).files]
    out: list[tuple[str, bool | None, str]] = []
    for f in spec(name).files:
        have = _present_as(folder, f)
        if have is None:
            out.append((f.name, False, "missing"))
        elif have != f.name:
            out.append(_verify_standin(folder, f, have))
        else:
            algo, got, want = f.checksum(folder / f.name)
            if got == want:
                out.append((f.name, True, f"{algo} ok"))
            else:
                out.append((f.name, False, f"{algo} {got} does not match the official {want}"))
    return out


def _verify_standin(folder: Path, f: RemoteFile, have: str) -> tuple[str, bool | None, str]:
    sums = [(p, m) for p, m in f.also_md5 if p == have or p.startswith(have + "/")]
    if not sums:
        return (have, None, f"unverified: present in place of {f.name}, whose published md5 is of the "
                            "download; no md5 is known for this uncompressed copy")
    for path, md5 in sums:
        if not (folder / path).is_file():
            return (have, False, f"lacks {path}")
        got = md5sum(folder / path)
        if got != md5:
            return (have, False, f"{path}: md5 {got} does not match the official {md5}")
    return (have, True, f"md5 ok ({len(sums)} files, in place of {f.name})")


def download_file(url: str, dest: Path, md5: str, progress: bool = True,
                  timeout: float = _TIMEOUT_S, sha256: str = "") -> Path:
    """Fetch `url` into `dest` via ``dest.part``, resuming a partial ``.part``; check md5 (or
    `sha256` when given); rename.

    Raises DatasetError on a checksum mismatch (the ``.part`` is removed) and lets urllib's
    network errors (URLError, OSError) through for the caller to phrase.
    """
    from ..progress import Progress

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "vqdraw"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not offset:  # 416: the .part may already hold the whole file
            raise
        response = None
    if response is not None:
        with response:
            if offset and response.status != 206:
                offset = 0  # the server ignored the Range header: start over
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length and length.isdigit() else None
            bar = Progress(total or 0, initial=offset, desc=dest.name, unit="byte", enabled=progress and bool(total))
            try:
                with open(part, "ab" if offset else "wb") as fh:
                    while chunk := response.read(_CHUNK):
                        fh.write(chunk)
                        bar.update(len(chunk))
            finally:
                bar.close()
    algo, want = ("sha256", sha256) if sha256 else ("md5", md5)
    got = file_digest(part, algo)
    if got != want:
        part.unlink(missing_ok=True)
        raise DatasetError(f"{dest.name}: downloaded from {url} but its {algo} {got} does not match "
                           f"the official {want}; the partial file was removed, try again")
    os.replace(part, dest)
    return dest


def ensure_downloaded(name: str, data_dir: str | Path | None = None,
                      progress: bool = True, timeout: float = _TIMEOUT_S) -> Path:
    """Download the files of dataset `name` that are missing; return the dataset's folder."""
    s = spec(name)
    st = status(name, data_dir)
    if st.complete:
        return st.folder
    if s.manual:
        raise missing_error(name, st.folder, st.missing)
    for f in s.files:
        if f.name not in st.missing:
            continue
        try:
            download_file(f.url, st.folder / f.name, f.md5, progress=progress, timeout=timeout, sha256=f.sha256)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            if isinstance(exc, urllib.error.HTTPError):
                reason = f"HTTP {exc.code} {exc.reason}"
            else:
                reason = getattr(exc, "reason", None) or exc
            raise missing_error(
                name, st.folder, st.missing,
                reason=f"could not download {f.url} ({reason})",
            ) from exc
    return st.folder


def check_split(split: str, name: str) -> None:
    """Raise the usual error unless `split` is 'train' or 'test'."""
    if split not in ("train", "test"):
        raise DatasetError(f"{name}: unknown split {split!r}: use 'train' or 'test'")
