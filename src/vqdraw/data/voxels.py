"""3-D occupancy grids as a dataset: a folder of ``.npy`` / ``.npz`` / ``.binvox`` files.

    load_voxel_folder("grids/", "train")   ->  Dataset, items (N, D, H, W, 1) uint8 0 / 255
    read_grids("chair.binvox")             ->  (1, D, H, W) bool
    read_binvox(data) / binvox_bytes(grid) ->  the binvox format, both ways

Files (searched recursively, hidden ones skipped, in sorted relative-path order):

* ``.npy``: one grid (D, H, W) or a stack (N, D, H, W); dtype bool, an integer type or a float
  type, every value 0 or 1. Read with ``allow_pickle=False``.
* ``.npz``: the array named ``voxels`` (the layout of the paper author's ModelNet export), or
  the only array in the file; the same rules.
* ``.binvox`` (Patrick Min's format, as written by ``binvox`` and ``cuda_voxelizer``): a text header
  ``#binvox 1`` / ``dim D H W`` / optional ``translate`` and ``scale`` lines / ``data``, then
  (value, count) byte pairs run-length coding the voxels with the last axis fastest in the file's
  x-z-y order. The grid is returned indexed (x, y, z), as binvox_rw does.

Split: the items (grids, in file order, then in order within a file) numbered 0, 1, 2, ...; every
tenth item (9, 19, 29, ...) is the test split, the rest is train: the image folder reader's rule,
applied to grids instead of files, so one ``.npy`` stack splits the same way as many files.

Size: every grid must have the shape of the first one, or the ``size`` asked for. A grid whose
sides are whole multiples of ``size`` is reduced by block maximum (a voxel is occupied if any
voxel of its block is), e.g. 64^3 ModelNet grids for a 32^3 model; any other size is refused.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from .base import DatasetError, Dataset
from .walk import files_under
from .download import check_split

VOXEL_SUFFIXES = (".npy", ".npz", ".binvox")
MAX_SIDE = 512
"""Largest grid side accepted (a 512^3 grid is 128 Mi voxels)."""
MAX_FILE_BYTES = 2 << 30
MAX_NPZ_MEMBER_BYTES = 512 << 20
"""The most an .npz member may inflate to (its zip entry's declared size, checked before inflating)."""
"""Largest voxel file read (2 GiB)."""
_MAX_HEADER_LINES = 16


# ------------------------------------------------------------------------------------- binvox
def read_binvox(data: bytes, where: str = "binvox data") -> np.ndarray:
    """Decode the bytes of a ``.binvox`` file into a bool grid indexed (x, y, z).

    DatasetError (one line, naming ``where``) for anything that is not a complete, valid file.
    """
    data = bytes(data)
    pos = 0
    dims = None
    for number in range(_MAX_HEADER_LINES):
        end = data.find(b"\n", pos)
        if end < 0:
            raise DatasetError(f"{where}: truncated binvox header (no 'data' line)")
        line = data[pos:end].strip()
        pos = end + 1
        if number == 0 and not line.startswith(b"#binvox"):
            raise DatasetError(f"{where}: not a binvox file (it does not start with '#binvox')")
        words = line.split()
        if not words:
            continue
        key = words[0]
        if key == b"#binvox":
            if words[1:] != [b"1"]:
                raise DatasetError(f"{where}: unsupported binvox version {b' '.join(words[1:]).decode(errors='replace')!r}")
        elif key == b"dim":
            try:
                dims = tuple(int(w) for w in words[1:])
            except ValueError:
                dims = ()
            if len(dims) != 3 or not all(1 <= d <= MAX_SIDE for d in dims):
                raise DatasetError(f"{where}: binvox 'dim' must be three sizes in 1..{MAX_SIDE}, "
                                   f"got {line.decode(errors='replace')!r}")
        elif key in (b"translate", b"scale"):
            continue  # placement of the grid in the model's space; not needed for the occupancy
        elif key == b"data":
            break
        else:
            raise DatasetError(f"{where}: unexpected binvox header line {line[:40].decode(errors='replace')!r}")
    else:
        raise DatasetError(f"{where}: binvox header too long (no 'data' line)")
    if dims is None:
        raise DatasetError(f"{where}: binvox header has no 'dim' line")
    runs = np.frombuffer(data, dtype=np.uint8, offset=pos)
    if len(runs) % 2:
        raise DatasetError(f"{where}: truncated binvox data (odd number of run bytes)")
    values, counts = runs[0::2], runs[1::2].astype(np.int64)
    if values.size and values.max() > 1:
        raise DatasetError(f"{where}: binvox run value {int(values.max())} (must be 0 or 1)")
    if counts.size and counts.min() == 0:
        raise DatasetError(f"{where}: binvox run of length 0")
    total = int(np.prod(dims))
    if int(counts.sum()) != total:
        raise DatasetError(f"{where}: binvox runs cover {int(counts.sum())} voxels; 'dim' "
                           f"{dims[0]} {dims[1]} {dims[2]} needs {total}")
    flat = np.repeat(values.astype(bool), counts)
    # the file stores x slowest, then z, then y fastest: index (x, z, y), returned as (x, y, z)
    return flat.reshape(dims[0], dims[2], dims[1]).transpose(0, 2, 1).copy()


def binvox_bytes(grid: np.ndarray, translate=(0.0, 0.0, 0.0), scale: float = 1.0) -> bytes:
    """A ``.binvox`` file for a grid indexed (x, y, z) (anything 0/1 or bool); inverse of :func:`read_binvox`."""
    grid = np.asarray(grid)
    if grid.ndim != 3:
        raise DatasetError(f"a binvox grid must have 3 dimensions, got shape {grid.shape}")
    flat = grid.astype(bool).transpose(0, 2, 1).reshape(-1).astype(np.uint8)  # (x, z, y) order
    out = bytearray()
    out += b"#binvox 1\n"
    out += f"dim {grid.shape[0]} {grid.shape[1]} {grid.shape[2]}\n".encode()
    out += f"translate {translate[0]:g} {translate[1]:g} {translate[2]:g}\n".encode()
    out += f"scale {scale:g}\ndata\n".encode()
    if flat.size:
        change = np.flatnonzero(np.diff(flat)) + 1
        starts = np.concatenate([[0], change])
        lengths = np.diff(np.concatenate([starts, [flat.size]]))
        for value, length in zip(flat[starts].tolist(), lengths.tolist()):
            while length > 0:
                run = min(length, 255)
                out += bytes((value, run))
                length -= run
    return bytes(out)


# ------------------------------------------------------------------------------------- files
def read_grids(path: str | Path) -> np.ndarray:
    """The grids in one file as bool (N, D, H, W): N = 1 for a single grid."""
    from ..errors import PathError
    from ..io import check_input_file

    path = Path(path)
    try:
        check_input_file(path, "voxel file", MAX_FILE_BYTES)  # a regular file: a FIFO would block np.load
    except PathError as exc:
        raise DatasetError(str(exc)) from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".binvox":
            return read_binvox(path.read_bytes(), str(path))[None]
        if suffix == ".npy":
            with open(path, "rb") as f:
                _check_npy_header(f, path.stat().st_size, str(path))
            arr = np.load(path, allow_pickle=False, mmap_mode="r")
        elif suffix == ".npz":
            arr = _read_npz_member(path)
        else:
            raise DatasetError(f"{path}: not a voxel file (expected {', '.join(VOXEL_SUFFIXES)})")
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{path}: cannot read the array ({str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__})") from None
    return _as_grids(arr, str(path))


def _read_npz_member(path: Path) -> np.ndarray:
    """The 'voxels' (or only) array of an .npz file, inflated only up to MAX_NPZ_MEMBER_BYTES as
    its zip entry declares, and only if its .npy header declares exactly the bytes it holds."""
    import io

    from .capped import read_zip_member

    with zipfile.ZipFile(path) as z:
        names = [n.removesuffix(".npy") for n in z.namelist()]
        name = "voxels" if "voxels" in names else (names[0] if len(names) == 1 else None)
        if name is None:
            raise DatasetError(f"{path}: an .npz file needs an array named 'voxels' or a single "
                               f"array; it has {', '.join(names[:10]) or 'none'}")
        member = z.namelist()[names.index(name)]
        raw = read_zip_member(z, member, MAX_NPZ_MEMBER_BYTES, where=f"{path}: {member}",
                              what="a voxel array", missing="missing")
    _check_npy_header(io.BytesIO(raw), len(raw), f"{path}: {member}")
    return np.load(io.BytesIO(raw), allow_pickle=False)


def _check_npy_header(stream, size: int, where: str) -> None:
    """Refuse an .npy header (read from ``stream``, of ``size`` bytes in all) that declares Python
    objects, a negative dimension, or other than exactly the bytes that follow it: checked in exact
    integers before numpy maps or reads anything (numpy would overflow, warn, or raise untyped)."""
    version = np.lib.format.read_magic(stream)
    shape, _, dtype = (np.lib.format.read_array_header_1_0(stream) if version == (1, 0)
                       else np.lib.format.read_array_header_2_0(stream))
    if dtype.hasobject:
        raise DatasetError(f"{where}: cannot read the array (it holds Python objects, not an occupancy grid)")
    if any(int(n) < 0 for n in shape):
        raise DatasetError(f"{where} declares shape {shape}, with a negative dimension")
    declared = math.prod(int(n) for n in shape) * dtype.itemsize
    if declared != size - stream.tell():
        raise DatasetError(f"{where} declares shape {shape} ({declared:,} bytes) but holds "
                           f"{size - stream.tell():,} bytes")


def _as_grids(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise DatasetError(f"{where}: expected a grid (D, H, W) or grids (N, D, H, W), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise DatasetError(f"{where}: holds no grids (shape {arr.shape})")
    if max(arr.shape[1:]) > MAX_SIDE or min(arr.shape[1:]) < 1:
        raise DatasetError(f"{where}: grid sides must be 1..{MAX_SIDE}, got {arr.shape[1:]}")
    if arr.dtype == bool:
        return np.asarray(arr)
    if arr.dtype.kind not in "iuf":
        raise DatasetError(f"{where}: dtype {arr.dtype} is not an occupancy grid (bool, integers or floats 0/1)")
    arr = np.asarray(arr)
    binary = (arr == 0) | (arr == 1)
    if not binary.all():
        bad = arr[~binary].flat[0]
        raise DatasetError(f"{where}: occupancy grids hold only 0 and 1; found {bad!r} "
                           "(threshold your data first, e.g. grid > 0.5)")
    return arr == 1


def list_voxel_files(root: Path) -> list[Path]:
    """Voxel files under `root`, recursively, sorted by relative path; hidden ones skipped."""
    found = [
        p for p in files_under(root)
        if p.suffix.lower() in VOXEL_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def expand_voxel_paths(paths) -> list[Path]:
    """Files as given, folders replaced by the voxel files under them (sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = list_voxel_files(p)
            if not found:
                raise DatasetError(f"{p}: no {', '.join(VOXEL_SUFFIXES)} files found (searched recursively)")
            out += found
        elif p.exists():
            out.append(p)
        else:
            raise DatasetError(f"{p}: no such file or folder")
    return out


def fit_grids(grids: np.ndarray, size: tuple[int, int, int], where: str) -> np.ndarray:
    """Grids (N, D, H, W) at ``size``: as they are, or reduced by block maximum when each side is a
    whole multiple of the size asked for; DatasetError otherwise."""
    size = tuple(int(s) for s in size)
    have = tuple(grids.shape[1:])
    if have == size:
        return grids
    factors = [h // s if s and h % s == 0 else 0 for h, s in zip(have, size)]
    if not all(factors) or len(set(factors)) != 1:
        raise DatasetError(f"{where}: grids of {'x'.join(map(str, have))} voxels; the model takes "
                           f"{'x'.join(map(str, size))} (only whole-multiple sizes are reduced)")
    f = factors[0]
    n = grids.shape[0]
    blocks = grids.reshape(n, size[0], f, size[1], f, size[2], f)
    return blocks.any(axis=(2, 4, 6))


def load_voxel_files(paths, size: tuple[int, int, int] | None = None) -> np.ndarray:
    """All grids in ``paths`` (files, or folders searched recursively) as bool (N, D, H, W),
    every one at ``size`` (default: the first grid's). One bool ``.npy`` file of grids at that
    size is returned memory-mapped and read-only (read as it is used, not copied)."""
    grids = []
    for p in expand_voxel_paths(paths):
        g = read_grids(p)
        if size is None:
            size = tuple(g.shape[1:])
        grids.append(fit_grids(g, size, str(p)))
    if not grids:
        raise DatasetError("no voxel grids given")
    return grids[0] if len(grids) == 1 else np.concatenate(grids)


def load_voxel_folder(path: str | Path, split: str = "train",
                      size: tuple[int, int, int] | None = None) -> Dataset:
    """Split 'train' or 'test' of the grids in the voxel files under `path` (or in the one file
    `path`) as an unlabelled Dataset of (N, D, H, W, 1) uint8 items, 0 or 255."""
    root = Path(path).expanduser()
    name = f"voxels:{root}"
    check_split(split, name)
    if root.is_dir():
        files = list_voxel_files(root)
        if not files:
            raise DatasetError(f"{root}: no {', '.join(VOXEL_SUFFIXES)} files found (searched recursively)")
    elif root.is_file():
        files = [root]
    else:
        raise DatasetError(f"{root}: no such folder of voxel grids")
    picked = []
    index = 0  # of the item across all files
    for f in files:
        g = read_grids(f)
        if size is None:
            size = tuple(g.shape[1:])
        numbers = np.arange(index, index + len(g))
        index += len(g)
        keep = (numbers % 10 == 9) == (split == "test")
        if keep.any():
            picked.append(fit_grids(np.asarray(g[keep]), size, str(f)))
    if not picked:
        raise DatasetError(f"{root}: only {index} grid(s), so the {split} split (every tenth grid) is "
                           "empty; add at least 10 grids")
    items = np.concatenate(picked).astype(np.uint8) * np.uint8(255)
    return Dataset(items[..., None], None, name=name)
