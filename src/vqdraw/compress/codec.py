"""Images (or volumes) <-> ``.vqd`` bytes with a VQ-DRAW model: :func:`compress` and its inverse :func:`decompress`.

    images (B, C, H, W) in [0, 1] --model.encode--> codes (B, n) --write_vqd--> bytes
    bytes --read_vqd (checks magic, version, length, CRC, fingerprint)--> codes --model.decode--> images

The file format itself (header, bit packing, checksum) lives in :mod:`vqdraw.compress.bitstream` and
``docs/vqd-format.md``; this module ties it to a model: the file carries the model's
fingerprint, and a file made by another model, or whose image shape, ``K`` or stage count do not
fit this model, is refused with a one-line :class:`~vqdraw.compress.bitstream.VqdFormatError`. The header
records the model's modality (:mod:`vqdraw.core.modality`): image models write version 1 files, volume
(and sequence) models version 2, whose header holds a data shape of any rank.

Exactness: ``decompress(model, compress(model, x))[0]`` is bit for bit ``model.decode(codes)``
for ``codes = model.encode(x)`` in the same process (same device, same batch), and compressing
the same images twice gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .bitstream import VqdFile, read_vqd, write_vqd
from ..errors import InputError
from ..core.modality import stored_as
from ..core.inputs import check_batch, check_data, check_policy, check_stages
from ..core.stageloop import Greedy, Policy

MAX_VQD_BYTES = 256 << 20
"""The largest .vqd file read (256 MiB: millions of images at a few dozen bits each)."""

__all__ = [
    "DecodeOptions",
    "EncodeOptions",
    "compress",
    "check_file_stages",
    "compress_codes",
    "decompress",
    "decompress_chunks",
    "encode_images",
    "read_file",
    "read_input_bytes",
    "smaller_file",
]


@dataclass(frozen=True)
class EncodeOptions:
    """How an encode runs, in one object from the CLI (which builds it once from its arguments) down
    through the modality (:meth:`vqdraw.modalities.Modality.encode`) to this codec. ``batch`` and
    ``policy`` are checked here, when it is made; ``stages`` against the model by the codec."""

    stages: int | None = None
    """Keep the first ``stages`` codes of each item (None: all of the model's)."""
    policy: Policy = field(default_factory=Greedy)
    """How each stage chooses: ``Greedy()`` (the paper), ``Beam(width)``, or any Policy."""
    batch: int = 256
    """Items encoded at a time."""
    fit: bool = False
    """Fit pictures to the model (crop, resize, channels) instead of refusing another size."""
    prior: object = None
    """A :class:`vqdraw.prior.Prior` for the model: entropy-code the codes (.vqd version 3)."""
    progress: bool = True
    """Report progress (through :mod:`vqdraw.progress`) when there is more than one batch."""

    def __post_init__(self):
        check_batch(self.batch)
        if self.policy is None:
            object.__setattr__(self, "policy", Greedy())
        check_policy(self.policy)


@dataclass(frozen=True)
class DecodeOptions:
    """How a decode runs, in one object from the CLI down to the codec (see :class:`EncodeOptions`);
    ``stages`` is checked against the file by :func:`check_file_stages`."""

    stages: int | None = None
    """Decode the first ``stages`` of the stored stages (None: all of them)."""
    batch: int = 256
    """Items decoded (and written) at a time."""
    prior: object = None
    """The prior an entropy-coded file (version 3) was coded with."""
    progress: bool = True
    """Report progress when there is more than one batch."""
    rate: int | None = None
    """Audio and speech: write the waveform at this sample rate (Hz), resampled from the model's
    (None: the model's rate)."""

    def __post_init__(self):
        from ..core.config import MAX_SAMPLE_RATE

        check_batch(self.batch)
        if self.rate is not None and (isinstance(self.rate, bool) or not isinstance(self.rate, int)
                                      or not 1 <= self.rate <= MAX_SAMPLE_RATE):
            raise InputError(f"rate must be a whole number of Hz in 1..{MAX_SAMPLE_RATE}, got {self.rate!r}")


def encode_images(model, images: torch.Tensor, stages: int | None = None, beam: int | None = None, *,
                  policy: Policy | None = None) -> torch.Tensor:
    """``model.encode`` for a compressor: data (B, *data_shape), e.g. images (B, C, H, W) or
    volumes (B, C, D, H, W), floats in [0, 1], ``stages`` in 1..N (default N), ``policy`` how each
    stage chooses (greedy by default; ``Beam(W)`` for beam search; ``beam=W`` is its deprecated
    spelling). Returns int64 codes (B, n) on the CPU.

    The checks are the library's own (:mod:`vqdraw.core.inputs`): the stage count here (a file holds
    at least one stage), the policy and the data in ``model.encode``.
    """
    n = check_stages(model.config, stages, low=1)
    policy = check_policy(policy, beam, "encode_images")
    if isinstance(images, torch.Tensor) and images.dim() and images.shape[0] == 0:
        check_data(model.config, images, "cpu")  # refused as model.encode would; an empty batch has no codes
        return torch.zeros((0, n), dtype=torch.int64)
    codes = model.encode(images, stages=n, policy=policy)
    if not isinstance(codes, torch.Tensor):  # an EncodeResult
        codes = codes.codes
    return codes.detach().to("cpu", torch.int64)


def compress_codes(model, codes, prior=None, block: int | None = None, *, extra: bytes | None = None) -> bytes:
    """``.vqd`` bytes for ``codes`` (B, n), integers in ``[0, K)``, made by ``model``.

    ``prior`` (a :class:`vqdraw.prior.Prior` trained for ``model``): entropy-code them with it
    (``.vqd`` version 3, blocks of ``block`` items); otherwise fixed length (versions 1 and 2).
    ``extra``: the header block of a modality with its own layout (:func:`vqdraw.modalities.register`
    with ``code=``), which it reads back from ``read_file(...).extra``."""
    arr = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
    if arr.ndim != 2:
        raise InputError(f"codes must have shape (images, stages), got {tuple(arr.shape)}")
    if not 1 <= arr.shape[1] <= model.stages:
        raise InputError(f"codes must have 1..{model.stages} stages for this model, got {arr.shape[1]}")
    if prior is not None:
        prior.check_model(model)
    return write_vqd(arr, int(model.options), tuple(model.config.data_shape), model.fingerprint(),
                     modality=stored_as(model.config), coder=prior, block=block, extra=extra)


def smaller_file(coded: bytes, fixed: bytes) -> bytes:
    """The entropy-coded ``.vqd`` file unless the fixed-length one of the same codes is smaller (a few
    items, whose larger version-3 header outweighs the saving, or a prior that predicts these codes
    badly), so encoding with a prior never makes a file larger. Which one it is: its header's version
    (3 for entropy-coded)."""
    return coded if len(coded) <= len(fixed) else fixed


def compress(model, images: torch.Tensor, stages: int | None = None, beam: int | None = None, prior=None, *,
             policy: Policy | None = None) -> bytes:
    """Encode images (B, C, H, W) in [0, 1] and pack their codes into one ``.vqd`` file.

    ``stages`` keeps only the first ``stages`` codes of each image (fewer bits, a coarser
    image); ``policy=Beam(W)`` asks the encoder for beam search (``beam=W``: deprecated); ``prior``:
    entropy-code the codes with it (see :func:`compress_codes`). Inverse: :func:`decompress`.
    """
    policy = check_policy(policy, beam, "compress")
    return compress_codes(model, encode_images(model, images, stages=stages, policy=policy), prior=prior)


def read_file(model, data: bytes, prior=None) -> VqdFile:
    """Parse ``.vqd`` bytes made by ``model``; :class:`VqdFormatError` for anything else.

    Beyond :func:`vqdraw.compress.bitstream.read_vqd`'s own checks (magic, version, length, CRC) the
    header must fit the model: its fingerprint, modality, data shape, ``K``, and at most its stage count.
    These are checked from the header alone, before the CRC or the payload is looked at.
    An entropy-coded file (version 3) also needs ``prior``, the one it was coded with.
    """
    return read_vqd(
        data,
        expected_fingerprint=model.fingerprint(),
        data_shape=tuple(model.config.data_shape),
        K=int(model.options),
        max_stages=int(model.stages),
        modality=stored_as(model.config),
        coder=prior,
    )


def decompress(
    model, data: bytes, stages: int | None = None, batch_size: int | None = None, prior=None
) -> tuple[torch.Tensor, VqdFile]:
    """Inverse of :func:`compress`: ``.vqd`` bytes -> (data (B, *data_shape) in [0, 1] on the CPU, VqdFile).

    ``stages`` decodes only the first ``stages`` of the codes stored (default: all of them).
    With ``batch_size=None`` the codes are decoded in one ``model.decode`` call, so the result
    is bit for bit ``model.decode(codes)``; a batch size bounds the memory of the decoding (the
    result itself grows with the file: :func:`decompress_chunks` hands it out a batch at a time).
    ``prior``: the prior an entropy-coded file (version 3) was coded with.
    """
    vqd, chunks = decompress_chunks(model, data, stages=stages, batch_size=batch_size, prior=prior)
    parts = list(chunks)
    if not parts:
        return torch.zeros((0, *vqd.data_shape)), vqd
    return (parts[0] if len(parts) == 1 else torch.cat(parts)), vqd


def decompress_chunks(model, data: bytes, stages: int | None = None, batch_size: int | None = None,
                      prior=None):
    """:func:`decompress` a batch at a time: ``(VqdFile, chunks)``, where ``chunks`` yields the
    decoded data of ``batch_size`` items at a time (B_i, *data_shape) on the CPU, in order (all
    of them at once when ``batch_size`` is None). The file, ``stages`` and ``batch_size`` are
    checked before this returns; each chunk is decoded only when asked for, so a caller that
    writes each chunk out before asking for the next holds one chunk of decoded data at a time.
    """
    vqd = read_file(model, data, prior)
    step = max(vqd.count, 1) if batch_size is None else check_batch(batch_size)
    codes = torch.from_numpy(vqd.codes[:, :check_file_stages(vqd, stages, "image")])

    def chunks():
        for i in range(0, vqd.count, step):
            yield model.decode(codes[i : i + step]).cpu()

    return vqd, chunks()


def check_file_stages(vqd: VqdFile, stages, noun: str = "item") -> int:
    """How many of a file's stored stages to decode: ``stages`` in 1..stored (None: all of them).
    The one check of a decode's stage count, shared by every modality's reader."""
    if stages is None:
        return vqd.stages
    if isinstance(stages, bool) or not isinstance(stages, (int, np.integer)) or not 1 <= stages <= vqd.stages:
        raise InputError(f"the file stores {vqd.stages} stages per {noun}; cannot decode {stages!r:.40}")
    return int(stages)


def read_input_bytes(path: str | Path, what: str = ".vqd file") -> bytes:
    """The bytes of the file at ``path``, with a one-line :class:`InputError` (a VQDrawError)
    for a missing file, a folder, or one that cannot be read."""
    from ..errors import PathError
    from ..io import read_file_capped

    try:  # a regular file only (a FIFO would block, /dev/zero never ends), at most MAX_VQD_BYTES
        return read_file_capped(path, MAX_VQD_BYTES, what)
    except PathError as exc:
        raise InputError(str(exc)) from None
