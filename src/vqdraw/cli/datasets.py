"""`vqdraw datasets`: list the datasets, where they are stored, which are present; verify; download."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DESCRIPTION = """\
List the datasets vqdraw can read, the folder each is read from and whether its official files
are there. Files live in <data dir>/<dataset>/; the data dir is --data-dir, else $VQDRAW_DATA,
else ~/.cache/vqdraw. --verify checks present files against the official md5s (an uncompressed
stand-in with no published md5 is reported "unverified"; --strict makes that a failure); --download NAME
fetches a dataset's missing files (CelebA has no direct link: you are told where to get it).
Any folder of PNG/JPEG images can also be used as a dataset, named folder:/path/to/images; any
UTF-8 text file or folder as text:/path/to/file.txt; any folder of .npy/.npz/.binvox occupancy
grids as voxels:/path/to/grids; any folder of WAV/FLAC files as audio:/path/to/sounds.
asterisk-en is installed by the system's package manager (apt-get install
asterisk-core-sounds-en-wav). So can Fashion-MNIST be, on Debian: apt install dataset-fashion-mnist
puts its files in /usr/share/datasets/fashion-mnist, which vqdraw reads when the data dir has no
fashion-mnist/ of its own (or pass --data-dir /usr/share/datasets).

`vqdraw datasets export NAME -o DIR` writes --count items of a split of dataset NAME into DIR as
ordinary files that encode, reconstruct and the other verbs read: PNG images, UTF-8 .txt text, .npy
occupancy grids for volumes, 16-bit WAV for audio (8 kHz; needs the [audio] extra). The items are a
class-balanced, seeded subset, each file named by the item's index in the split:

    vqdraw datasets export mnist-embedded --split test --count 16 -o my-digits/"""


def register(subparsers) -> None:
    from .common import MAX_COUNT, output_dir, positive_int

    p = subparsers.add_parser("datasets", description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              usage="%(prog)s [--data-dir DIR] [--verify] [--strict] [--download NAME]\n"
                                    "       %(prog)s export NAME [--split test] [--count 16] -o DIR")
    p.add_argument("action", nargs="?", choices=["export"], metavar="export",
                   help="export NAME: write items of dataset NAME as files into -o DIR")
    p.add_argument("name", nargs="?", metavar="NAME", help="the dataset to export (any name the list shows)")
    p.add_argument("--split", choices=["train", "test"], default="test", help="export: the split (default: test)")
    p.add_argument("--count", type=positive_int(max=MAX_COUNT), default=16,
                   help="export: how many items (default: 16; fewer if the split holds fewer)")
    p.add_argument("-o", "--output", type=output_dir, default=None, metavar="DIR",
                   help="export: the folder to write into (created if missing; files of the same names are replaced)")
    p.add_argument("--data-dir", metavar="DIR", default=None,
                   help="folder holding one sub-folder per dataset (default: $VQDRAW_DATA "
                        "or ~/.cache/vqdraw)")
    p.add_argument("--verify", action="store_true",
                   help="md5-check each present file against the official checksum")
    p.add_argument("--strict", action="store_true",
                   help="verify, and exit 1 also when a file is unverified (an uncompressed "
                        "stand-in without a published md5)")
    p.add_argument("--download", metavar="NAME", action="append", default=[],
                   help="download the missing files of dataset NAME ('all' for every dataset "
                        "with a direct link); may be repeated")
    p.set_defaults(func=run)


def _state(st) -> str:
    if st.complete:
        return "present"
    if len(st.missing) == len(st.files):
        return "missing"
    return f"partial, missing {', '.join(st.missing)}"


def _asterisk_row() -> tuple[str, str, str]:
    """asterisk-en: installed by the system's package manager, not downloaded."""
    from ..data import audio

    folder = audio.asterisk_dir()
    if folder is None:
        return ("asterisk-en", "missing", f"recorded English telephone prompts; apt-get install {audio.ASTERISK_PACKAGE}")
    return ("asterisk-en", "present", f"recorded English telephone prompts (8 kHz WAV, CC-BY-SA-3.0); {folder}")


def run(args: argparse.Namespace) -> int:
    if args.action == "export":
        return export(args)
    if args.name is not None:
        from ..errors import InputError

        raise InputError(f"unexpected argument {args.name!r}; to write items as files: "
                         f"vqdraw datasets export {args.name} -o DIR")
    from ..data import download as dl
    from ..data.base import DatasetError

    data_dir = args.data_dir
    for name in args.download:
        names = [n for n, s in dl.CATALOGUE.items() if not s.manual] if name == "all" else [name]
        for n in names:
            if n not in dl.CATALOGUE:
                raise DatasetError(f"cannot download {n!r}; downloadable: "
                                   f"{', '.join(dl.CATALOGUE)} or all")
            if not dl.CATALOGUE[n].manual:
                print(f"{n}: fetching into {dl.dataset_dir(n, data_dir)}", flush=True)
            dl.ensure_downloaded(n, data_dir)

    if data_dir is not None:
        root, origin = Path(data_dir).expanduser(), "--data-dir"
    else:
        root = dl.default_data_dir()
        origin = "$VQDRAW_DATA" if os.environ.get("VQDRAW_DATA") else "default per-user cache"
    print(f"data folder: {root}  ({origin})")
    rows = [("NAME", "STATUS", "DESCRIPTION / FOLDER")]
    rows.append(("mnist-embedded", "built in", "5,000 MNIST digits shipped with vqdraw"))
    statuses = [dl.status(n, data_dir) for n in dl.CATALOGUE]
    for st in statuses:
        s = dl.CATALOGUE[st.name]
        where = f"{s.title}; {st.folder}"
        if st.name in dl.SYSTEM_DIRS and st.folder != dl.dataset_dir(st.name, data_dir):
            where += " (the system package)"
        elif st.name in dl.SYSTEM_DIRS and not st.complete:
            folder, package = dl.SYSTEM_DIRS[st.name]
            where += f"; or apt install {package} (read from {folder})"
        rows.append((st.name, _state(st), where))
    rows.append(("text-embedded", "built in", "CPython's documentation prose, shipped with Python (pydoc_data)"))
    rows.append(("folder:PATH", "-", "your own PNG/JPEG images (every tenth file is test)"))
    rows.append(("text:PATH", "-", "your own UTF-8 text file or folder of them"))
    rows.append(("voxels:PATH", "-", "your own .npy/.npz/.binvox occupancy grids (every tenth grid is test)"))
    rows.append(_asterisk_row())
    rows.append(("audio:PATH", "-", "your own WAV/FLAC files, resampled, cut into clips (docs/audio.md)"))
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}")

    bad = checked = unverified = 0
    if args.verify or args.strict:
        print()
        for st in statuses:
            if not any(have for _, have in st.files):
                continue  # nothing of this dataset here: nothing to verify
            for file, ok, message in dl.verify(st.name, data_dir):
                checked += 1
                bad += ok is False
                unverified += ok is None
                mark = "ok" if ok else "FAIL" if ok is False else "?"
                print(f"{st.name:<{widths[0]}}  {mark:<4}  {file}: {message}")
        if not checked:
            print("no dataset files present to verify")
        if bad:
            print(f"{bad} file(s) missing or not matching their official md5")
        if unverified:
            print(f"{unverified} file(s) unverified (no published md5)"
                  + ("; failing because of --strict" if args.strict else "; use --strict to fail on them"))
        if checked and not bad and not unverified:
            print("all files match")
    return 1 if bad or (args.strict and unverified) else 0


def export(args: argparse.Namespace) -> int:
    """`vqdraw datasets export NAME -o DIR`: items of a dataset as files."""
    from ..data import load_dataset
    from ..data.export import export_items
    from ..errors import InputError

    if args.name is None or args.output is None:
        raise InputError("export needs a dataset and a folder: vqdraw datasets export NAME -o DIR")
    dataset = load_dataset(args.name, args.split, args.data_dir)
    done = export_items(dataset, args.output, args.count)
    kind = {"image": "image", "text": "text", "volume": "volume", "audio": "audio clip"}[done.modality]
    print(f"{args.output}: {len(done.files)} {kind}{'s' if len(done.files) != 1 else ''} of "
          f"{args.name} ({args.split}) as {done.files[0].suffix[1:].upper() if done.files else 'files'}")
    return 0
