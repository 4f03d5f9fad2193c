"""What every modality provides: reading its inputs, writing its outputs, reporting on them.

A :class:`Modality` is the one place that knows how a kind of data (images, voxel grids, text,
audio, plain sequences) travels between files and a model's tensors (B, C, *S) in [0, 1]. The CLI
verbs and the training loop ask :func:`vqdraw.modalities.modality_for` for the model's modality
and call these methods, so no verb branches on the kind of data.

Each ``write_*`` / ``encode`` / ``decode`` method writes its files and returns the line(s) a
verb prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Inputs:
    """What a verb was asked to read: files, else the test split of a dataset.

    ``dataset`` is the name to read when no files are given (``--dataset``, or the one the model
    was trained on); ``count`` how many items to take (None: all files, 8 test items).
    """

    files: tuple[str, ...] = ()
    dataset: str | None = None
    data_dir: str | None = None
    count: int | None = None
    fit: bool = False


class Modality:
    """A kind of data. Subclasses set the names and override what differs."""

    name = ""
    """The modality's name (:data:`vqdraw.core.modality.MODALITIES`)."""
    noun = "item"
    """One item of data, in messages ("image", "volume", "sequence", "clip")."""
    file_suffixes: tuple[str, ...] = ()
    """File name endings of this modality's input files (lower case)."""
    pair_suffix = ".png"
    """What ``vqdraw reconstruct`` writes by default (MODEL/reconstructions-cli + this)."""
    run_outputs: tuple[str, ...] = ()
    """Files training writes into a run folder for this modality (besides curves.png)."""
    supports_eval = False
    """Whether ``vqdraw eval`` (rate–distortion against image codecs) applies."""

    # -------------------------------------------------------------- recognising the modality
    def holds_path(self, path: Path) -> bool:
        """Whether a file, or a folder's files, given on the command line hold this modality's data."""
        suffixes = _suffixes(path)
        return bool(suffixes) and bool(suffixes & set(self.file_suffixes))

    def sample_name(self, seed: int) -> str:
        """What ``vqdraw sample`` writes by default, in the model's folder."""
        return f"samples-{seed}.png"

    # -------------------------------------------------------------- inputs
    def load(self, model, inputs: Inputs):
        """(B, C, *S) data on the model's device: the files given, else test items of the dataset."""
        if inputs.files:
            return self.load_files(model, inputs.files, count=inputs.count, fit=inputs.fit)
        return self.load_test_items(model, inputs)

    def load_files(self, model, files, *, count: int | None = None, fit: bool = False):
        from ..errors import InputError

        raise InputError(f"a {self.name} model reads no files; pass --dataset")

    def load_test_items(self, model, inputs: Inputs):
        """The first ``count`` (default 8) test items of the dataset, at the model's size."""
        data = self.test_set(model, inputs)
        return data.batch(range(min(inputs.count or 8, len(data))), model.device)

    def test_set(self, model, inputs: Inputs):
        """The dataset's test split at the model's size; a shape that differs is one line."""
        from ..data import load_dataset
        from ..errors import InputError

        if inputs.dataset is None:
            raise InputError(f"no {self.noun} files given and the model folder does not say its dataset; "
                             "pass --dataset")
        test = load_dataset(inputs.dataset, "test", inputs.data_dir, size=tuple(model.config.data_shape[1:]),
                            sample_rate=getattr(model.config, "sample_rate", 0) or None)
        if test.data_shape != tuple(model.config.data_shape):
            raise InputError(f"dataset {inputs.dataset} has {self.noun}s of shape {test.data_shape}, the model "
                             f"takes {tuple(model.config.data_shape)}")
        return test

    # -------------------------------------------------------------- outputs of the verbs
    def write_pairs(self, model, data, recon, out: Path, *, stages: int, title: str = "") -> str:
        """Originals beside their reconstructions; returns the report line(s)."""
        raise NotImplementedError

    def write_samples(self, model, out: Path, *, count: int, stages: int | None, seed: int, codes=None) -> str:
        """Decodings of uniformly random codes (or of ``codes``, drawn from a learned prior);
        returns what to print."""
        raise NotImplementedError

    def write_stages(self, model, data, out: Path, *, max_stages: int, title: str = "") -> str:
        """The reconstruction stage by stage; returns what to print."""
        raise NotImplementedError

    def encode(self, model, files, out: Path, *, stages: int | None, beam: int, batch: int,
               fit: bool = False, prior=None) -> str:
        """Input files -> one ``.vqd`` file at ``out`` (entropy-coded with ``prior`` when given:
        :mod:`vqdraw.prior`); returns the report line."""
        raise NotImplementedError

    def decode(self, model, data: bytes, out: Path, *, stages: int | None, batch: int, source: str,
               prior=None) -> str:
        """A ``.vqd`` file's bytes -> decoded files under ``out`` (``prior``: the one an
        entropy-coded file needs); returns the report line."""
        raise NotImplementedError

    # -------------------------------------------------------------- training
    def write_run_outputs(self, model, run_dir: Path, test_data, title: str = "") -> None:
        """Samples, reconstructions and stages in a run folder (training's checkpoints)."""
        raise NotImplementedError

    def summary(self, metrics: dict) -> str:
        """The end-of-training summary of the last evaluation's metrics."""
        return (f"test MSE {metrics['test_mse']:.4f} (normalised), {metrics['test_mse_pixels']:.5f} "
                f"(pixels in [0, 1]), PSNR {metrics['test_psnr']:.2f} dB")


def _suffixes(path) -> set[str]:
    """The suffix of a file, or the suffixes of a folder's files (recursively)."""
    p = Path(path)
    if p.is_dir():
        return {q.suffix.lower() for q in p.rglob("*") if q.is_file()}
    return {p.suffix.lower()}


def write_files_atomically(items, names: list[str], out, save) -> None:
    """Write items[i] as ``out/names[i]`` with ``save(item, path)`` so that on any error ``out`` is
    left as it was.

    Everything is written into a temporary folder beside ``out`` (same file system), which then
    becomes ``out`` by one rename, or, when ``out`` already exists, whose files are renamed into
    it (undone if a rename fails).
    """
    import os
    import shutil
    import tempfile

    from ..errors import InputError

    out = Path(out)
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_temporaries(parent, out.name)
        tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out.name}.{os.getpid()}.", suffix=".tmp"))
    except OSError as exc:
        raise InputError(f"{out}: cannot create the output folder ({exc.strerror or exc})") from None
    try:
        for item, name in zip(items, names):
            save(item, tmp / name)
        if not out.exists():
            os.rename(tmp, out)
            return
        moved: list[tuple[Path, Path | None]] = []  # (destination, backup of what it replaced)
        try:
            for name in names:
                dest = out / name
                backup = None
                if dest.exists():
                    backup = tmp / (name + ".old")
                    os.replace(dest, backup)
                moved.append((dest, backup))
                os.replace(tmp / name, dest)
        except BaseException:
            for dest, backup in reversed(moved):
                if backup is not None and backup.exists():
                    os.replace(backup, dest)
                elif backup is None:
                    dest.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise InputError(f"{out}: cannot write the files ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_dead_temporaries(parent: Path, name: str) -> None:
    """Remove ``.NAME.<pid>.*.tmp`` folders left by a write that was killed (its pid is gone)."""
    import os
    import re
    import shutil

    pattern = re.compile(re.escape(f".{name}.") + r"(\d+)\.[^/]*\.tmp")
    for p in parent.iterdir():
        m = pattern.fullmatch(p.name)
        if not m or not p.is_dir() or p.is_symlink():
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except (OSError, OverflowError):
            pass


def write_vqd_file(out, data: bytes) -> bytes:
    """Write the .vqd bytes atomically; a write error is one line. Returns the bytes."""
    from ..errors import InputError
    from ..io import atomic_write_bytes

    try:
        atomic_write_bytes(out, data)
    except OSError as exc:
        raise InputError(f"{out}: cannot write the .vqd file ({exc.strerror or exc})") from None
    return data


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"
