"""What every modality provides: reading its inputs, writing its outputs, reporting on them.

A :class:`Modality` is the one place that knows how a kind of data (images, voxel grids, text,
audio, plain sequences) travels between files and a model's tensors (B, C, *S) in [0, 1]. The CLI
verbs and the training loop ask :func:`vqdraw.modalities.modality_for` for the model's modality
and call these methods, so no verb branches on the kind of data.

Each ``write_*`` / ``encode`` / ``decode`` method writes its files and returns the line(s) a
verb prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..compress.codec import DecodeOptions, EncodeOptions
from ..core.model import SAMPLE_CHUNK, sample_chunks  # noqa: F401 (their home is vqdraw.core.model)


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
    give = ""
    """What to give a model of this modality, said when it is given another kind of data
    ("PNG/JPEG images (files, a folder:DIR, ...)"; empty: "<name> data")."""
    reads = ""
    """Another modality whose files and datasets this one's models read (speech reads "audio")."""
    decodes_at_rate = False
    """Whether decoding writes waveforms at a chosen sample rate (``vqdraw decode --rate``,
    ``DecodeOptions.rate``)."""

    # -------------------------------------------------------------- its models
    def check_config(self, config) -> None:
        """Refuse (ConfigError, one line) a ``ModelConfig`` naming this modality that it cannot
        serve: its data shape, its ``modality_options``. Run when the config is made; the built-in
        modalities' rules are rows of :func:`vqdraw.core.modality.check_config`'s table."""

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
        from ..data import load_dataset_for
        from ..errors import InputError

        if inputs.dataset is None:
            raise InputError(f"no {self.noun} files given and the model folder does not say its dataset; "
                             "pass --dataset")
        test = load_dataset_for(model.config, inputs.dataset, "test", inputs.data_dir)
        if test.data_shape != tuple(model.config.data_shape):
            raise InputError(f"dataset {inputs.dataset} has {self.noun}s of shape {test.data_shape}, the model "
                             f"takes {tuple(model.config.data_shape)}")
        return test

    # -------------------------------------------------------------- outputs of the verbs
    def write_pairs(self, model, data, recon, out: Path, *, stages: int, title: str = "") -> str:
        """Originals beside their reconstructions; returns the report line(s)."""
        raise NotImplementedError

    def write_samples(self, model, out: Path, *, count: int, stages: int | None, seed: int, codes=None,
                      progress: bool = True) -> str:
        """Decodings of uniformly random codes (or of ``codes``, drawn from a learned prior),
        made and written :data:`SAMPLE_CHUNK` at a time (progress on stderr unless ``progress``
        is False); returns what to print."""
        raise NotImplementedError

    def write_stages(self, model, data, out: Path, *, max_stages: int, title: str = "") -> str:
        """The reconstruction stage by stage; returns what to print."""
        raise NotImplementedError

    def encode(self, model, files, out: Path, options: EncodeOptions) -> str:
        """Input files -> one ``.vqd`` file at ``out``, as ``options`` say
        (:class:`~vqdraw.compress.codec.EncodeOptions`: stages, policy, batch, fit, prior,
        progress); returns the report line."""
        raise NotImplementedError

    def decode(self, model, data: bytes, out: Path, options: DecodeOptions, *, source: str) -> str:
        """A ``.vqd`` file's bytes -> decoded files under ``out``, as ``options`` say
        (:class:`~vqdraw.compress.codec.DecodeOptions`: stages, batch, prior, progress);
        ``source`` names the file in the report line it returns."""
        raise NotImplementedError

    # -------------------------------------------------------------- training
    def write_run_outputs(self, model, run_dir: Path, test_data, title: str = "") -> None:
        """Samples, reconstructions and stages in a run folder (training's checkpoints)."""
        raise NotImplementedError

    # -------------------------------------------------------------- metrics (decided here, nowhere else)
    element = "element"
    """One element of an item, in metric names ("pixel", "character", "voxel", "sample")."""
    headline: tuple[str, str, str] | None = None
    """The metric the progress line shows: (metrics.jsonl key, short name, format), or None for
    the likelihood's loss."""

    def loss_name(self, config) -> str:
        """What the likelihood's loss is, for labels: "MSE (normalised)" for the paper's likelihood,
        "cross-entropy (nats per character)" for text, "BCE (nats per voxel)" for volumes..."""
        likelihood = getattr(config, "likelihood", "mse")
        if likelihood == "mse":
            return "MSE (normalised)"
        return f"{_LOSS_NAMES.get(likelihood, 'loss')} (nats per {self.element})"

    def test_metrics(self, model, data, recon) -> dict[str, float]:
        """Metrics of reconstructions ``recon`` of test ``data`` (both (B, C, *S) in [0, 1]) beyond
        the likelihood's loss, under their metrics.jsonl keys (``test_...``)."""
        return {}

    def progress_fields(self, record: dict) -> dict[str, str]:
        """The last evaluation's figure for the progress line: the headline metric, else the loss."""
        if self.headline and self.headline[0] in record:
            key, short, fmt = self.headline
            return {short: format(record[key], fmt)}
        loss = evaluation_loss(record)
        return {} if loss is None else {"test_loss": f"{loss:.4f}"}

    def summary(self, metrics: dict, config=None) -> str:
        """The end-of-training summary of the last evaluation's metrics."""
        loss = evaluation_loss(metrics)
        return f"test {self.loss_name(config)} {loss:.4f}"


_LOSS_NAMES = {"bernoulli": "BCE", "gaussian": "NLL", "categorical": "cross-entropy",
               "discretized-logistic": "NLL"}


def evaluation_loss(record: dict) -> float | None:
    """The likelihood's test loss of an evaluation record: ``test_loss``, or ``test_mse`` in
    metrics files written before the loss had its own name (None: not an evaluation record)."""
    value = record.get("test_loss", record.get("test_mse"))
    return None if value is None else float(value)


def _suffixes(path) -> set[str]:
    """The suffix of a file, or the suffixes of a folder's files (recursively; the folder is listed by
    :func:`vqdraw.data.walk.files_under`, once per command)."""
    from ..data.walk import files_under

    p = Path(path)
    if p.is_dir():
        return {q.suffix.lower() for q in files_under(p)}
    return {p.suffix.lower()}


class NumberedNames(Sequence):
    """``000000.png``, ``000001.png``, … for ``count`` items (at least six digits, more when the
    count needs them), computed on demand: a decode of millions of items holds no list of names."""

    def __init__(self, count: int, suffix: str):
        self.count, self.suffix = int(count), suffix
        self.width = max(6, len(str(max(self.count - 1, 0))))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.count))]
        if not -self.count <= i < self.count:
            raise IndexError(i)
        return f"{i % self.count:0{self.width}d}{self.suffix}"


class AtomicFolder:
    """Files that appear in the folder ``out`` all at once, written one by one as they come.

        with AtomicFolder(out) as folder:
            for name, item in ...:
                save(item, folder.path(name))     into a temporary folder beside out
            folder.commit(names)                  out, in one rename (or renames of its files)

    The temporary folder (``.OUT.<pid>.*.tmp``, on the same file system) becomes ``out`` by one
    rename, or, when ``out`` already exists, its files are renamed into it one by one (undone if
    a rename fails). On an error, or without ``commit``, it is removed and ``out`` is left as it
    was; one left by a killed process is removed by the next write to ``out``. Memory does not
    grow with the number of files.
    """

    def __init__(self, out):
        import tempfile

        from ..errors import InputError
        from ..io import remove_dead_temporaries, temporary_prefix

        self.out = Path(out)
        parent = self.out.absolute().parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            remove_dead_temporaries(parent, self.out.name)
            self.tmp = Path(tempfile.mkdtemp(dir=parent, prefix=temporary_prefix(self.out.name), suffix=".tmp"))
        except OSError as exc:
            raise InputError(f"{self.out}: cannot create the output folder ({exc.strerror or exc})") from None

    def path(self, name: str) -> Path:
        return self.tmp / name

    def __enter__(self) -> "AtomicFolder":
        return self

    def __exit__(self, *exc) -> None:
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)

    def commit(self, names) -> None:
        """Move the files ``names`` (all written with :meth:`path`) into ``out``."""
        import os

        from ..errors import InputError

        try:
            if not self.out.exists():
                os.rename(self.tmp, self.out)
                return
            backed_up = bytearray(len(names))  # 1 where a file of that name was replaced (kept as NAME.old)
            done = 0
            try:
                for i, name in enumerate(names):
                    dest = self.out / name
                    if dest.exists():
                        os.replace(dest, self.tmp / (name + ".old"))
                        backed_up[i] = 1
                    done = i + 1
                    os.replace(self.tmp / name, dest)
            except BaseException:
                for i in range(done - 1, -1, -1):
                    name = names[i]
                    backup = self.tmp / (name + ".old")
                    if backed_up[i] and backup.exists():
                        os.replace(backup, self.out / name)
                    elif not backed_up[i]:
                        (self.out / name).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise InputError(f"{self.out}: cannot write the files ({exc.strerror or exc})") from None


def write_files_atomically(items, names, out, save, progress=None) -> None:
    """Write items[i] as ``out/names[i]`` with ``save(item, path)`` so that on any error ``out`` is
    left as it was (:class:`AtomicFolder`). ``items`` may be any iterable (a generator decoding
    them chunk by chunk: each item is written, and can be freed, before the next is made);
    ``progress`` (a :class:`vqdraw.progress.Progress`) advances by one per file."""
    from ..errors import InputError

    with AtomicFolder(out) as folder:
        try:
            for item, name in zip(items, names):
                save(item, folder.path(name))
                if progress is not None:
                    progress.update(1)
        except OSError as exc:
            raise InputError(f"{folder.out}: cannot write the files ({exc.strerror or exc})") from None
        finally:
            if progress is not None:
                progress.close()
        folder.commit(names)


def progress_bar(total: int, *, chunk: int, desc: str, unit: str, enabled: bool = True):
    """The progress shown by a verb that works through ``total`` items ``chunk`` at a time: the
    trainer's :class:`~vqdraw.progress.Progress` (a bar on a terminal, else a line on stderr
    every tenth of the job), only when there is more than one chunk, and not with --no-progress."""
    from ..progress import Progress

    return Progress(total, desc=desc, unit=unit, enabled=enabled and total > chunk)


def items_of(chunks):
    """The items of an iterable of batches, one by one."""
    for chunk in chunks:
        yield from chunk


def decode_to_folder(modality, model, data: bytes, out, options: DecodeOptions, *, suffix: str, save):
    """A ``.vqd`` file's items as ``out/000000<suffix>``, …: decoded ``options.batch`` at a time and
    each batch written before the next is decoded (so memory does not grow with the item count),
    with progress; all of them appear in ``out`` at once at the end (:class:`AtomicFolder`).
    Returns the :class:`~vqdraw.compress.bitstream.VqdFile`."""
    from ..compress.codec import decompress_chunks

    batch = options.batch
    vqd, chunks = decompress_chunks(model, data, stages=options.stages, batch_size=batch, prior=options.prior)
    bar = progress_bar(vqd.count, chunk=batch, desc="decode", unit=modality.noun, enabled=options.progress)
    write_files_atomically(items_of(chunks), NumberedNames(vqd.count, suffix), out, save, progress=bar)
    return vqd


def is_entropy_coded(data: bytes) -> bool:
    """Whether .vqd bytes are entropy-coded with a prior (version 3), not fixed length."""
    from ..compress.bitstream import read_header

    return read_header(data).version == 3


def write_vqd_file(out, data: bytes) -> bytes:
    """Write the .vqd bytes atomically; a write error is one line. Returns the bytes."""
    from ..errors import InputError
    from ..io import atomic_write_bytes

    try:
        atomic_write_bytes(out, data)
    except OSError as exc:
        raise InputError(f"{out}: cannot write the .vqd file ({exc.strerror or exc})") from None
    return data


def write_codes_file(out, write, prior=None) -> bytes:
    """Write the ``.vqd`` file of some codes at ``out`` and return its bytes: ``write(None)`` (fixed
    length), or with a ``prior`` ``write(prior)`` (entropy-coded) unless that file would be the
    larger (:func:`vqdraw.compress.codec.smaller_file`)."""
    from ..compress.codec import smaller_file

    data = write(None)
    if prior is not None:
        data = smaller_file(write(prior), data)
    return write_vqd_file(out, data)


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"
