"""Text models: characters in and out of a VQ-DRAW model whose data are sequences of characters.

A text model is a rank-1 model with the categorical likelihood over the 256 classes of
:mod:`vqdraw.data.text` (the ``text`` preset). This module turns strings into its data and back,
packs a whole text into one ``.vqd`` file (chunks of the sequence length, the length recorded so
decoding gives back as many characters), and measures it: character accuracy and the categorical
cross-entropy in bits per character by stage, beside lossless compressors on the same text.

    data = text_to_data(text, length)               (N, 1, L) in [0, 1], last chunk space-padded
    vqd = compress_text(model, text)                 .vqd bytes (modality "text", length recorded)
    text = decompress_text(model, vqd)               exactly model.decode's characters, cut to length
    rows = stage_report(model, data)                 [{"stages", "char_accuracy", "bits_per_char", ...}]
    lossless_bits_per_char(text)                     {"gzip": ..., "bz2": ..., "lzma": ...}
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import math

import torch

from .bitstream import write_vqd
from .codec import check_file_stages, encode_images, read_file
from ..core.inputs import check_batch, check_policy, check_stages
from ..data.text import VOCAB_SIZE, encode_characters, sequences_to_text, text_to_data
from ..errors import InputError
from ..core.modality import modality_of
from ..core.stageloop import run_inference

__all__ = ["check_text_model", "compress_text", "decompress_text", "decompress_text_pieces", "encode_text",
           "write_text_codes", "lossless_bits_per_char",
           "reconstruct_lines", "sample_lines", "sequences_to_text", "stage_lines", "stage_report",
           "text_to_data", "text_data_for"]


def check_text_model(model) -> None:
    """Refuse a model that is not a text model (one line)."""
    kind = modality_of(model.config)
    if kind != "text":
        raise InputError(f"this is {'an' if kind[0] in 'aeiou' else 'a'} {kind} model, not a text model")
    if model.config.categories != VOCAB_SIZE:
        raise InputError(f"a text model has {VOCAB_SIZE} categories (the character vocabulary); "
                         f"this one has {model.config.categories}")


def text_data_for(model, text: str) -> torch.Tensor:
    """A text as the model's data (N, 1, L) on its device, the last chunk padded with spaces."""
    check_text_model(model)
    if not text:
        return torch.zeros((0, 1, model.config.data_shape[-1]), device=model.device)
    return text_to_data(text, model.config.data_shape[-1]).to(model.device)


def compress_text(model, text: str, *, stages: int | None = None, beam: int | None = None, batch: int = 64,
                  prior=None, progress=None, policy=None) -> bytes:
    """One ``.vqd`` file for ``text``: its chunks' codes, and the text's length in characters
    (entropy-coded with ``prior`` when given). The text is turned into the model's data ``batch``
    chunks at a time, so memory beyond the text and its codes does not grow with its length;
    ``progress(k)`` (optional) is called after each batch of ``k`` chunks; ``policy`` as in
    :func:`encode_text`."""
    policy = check_policy(policy, beam, "compress_text")
    codes = encode_text(model, text, stages=stages, batch=batch, progress=progress, policy=policy)
    return write_text_codes(model, codes, len(text), prior=prior)


def write_text_codes(model, codes: torch.Tensor, length: int, *, prior=None) -> bytes:
    """The ``.vqd`` bytes of a text's chunk codes (:func:`encode_text`) and its `length` in characters."""
    if prior is not None:
        prior.check_model(model)
    return write_vqd(codes.numpy(), int(model.options), tuple(model.config.data_shape), model.fingerprint(),
                     modality="text", length=length, coder=prior)


def encode_text(model, text: str, *, stages: int | None = None, beam: int | None = None, batch: int = 64,
                progress=None, policy=None) -> torch.Tensor:
    """The codes (chunks, n) of ``text`` cut into chunks of the model's length (the last padded);
    ``policy`` (a :class:`~vqdraw.core.stageloop.Policy`, greedy by default; ``beam=W``: the
    deprecated spelling of ``policy=Beam(W)``)."""
    check_text_model(model)
    policy = check_policy(policy, beam, "encode_text")
    stages, batch = check_stages(model.config, stages, low=1), check_batch(batch)
    length = model.config.data_shape[-1]
    step = batch * length  # characters per batch
    codes = []
    for start in range(0, len(text), step):
        data = text_to_data(text[start: start + step], length).to(model.device)
        codes.append(encode_images(model, data, stages, policy=policy))
        if progress is not None:
            progress(len(data))
    return torch.cat(codes) if codes else torch.zeros((0, stages or model.stages), dtype=torch.int64)


def decompress_text(model, data: bytes, *, stages: int | None = None, prior=None) -> str:
    """The text of a ``.vqd`` file made by :func:`compress_text`: ``model.decode`` of its codes as
    characters, chunk after chunk, cut to the recorded length."""
    return "".join(decompress_text_pieces(model, data, stages=stages, prior=prior)[1])


def decompress_text_pieces(model, data: bytes, *, stages: int | None = None, prior=None, batch: int = 1024):
    """:func:`decompress_text` a piece at a time: ``(VqdFile, pieces)``, where ``pieces`` yields
    the text of ``batch`` chunks at a time (the last one cut to the recorded length). The file
    and ``stages`` are checked before this returns; each piece is decoded only when asked for."""
    check_text_model(model)
    vqd = read_file(model, data, prior)
    step = check_batch(batch)
    codes = torch.from_numpy(vqd.codes[:, :check_file_stages(vqd, stages, "sequence")])

    def pieces():
        left = vqd.length or 0
        for start in range(0, vqd.count, step):
            if left <= 0:
                return
            text = "".join(sequences_to_text(model.decode(codes[start: start + step])))[:left]
            left -= len(text)
            yield text

    return vqd, pieces()


def sample_lines(model, n: int, *, generator: torch.Generator | None = None) -> list[str]:
    """``n`` sequences decoded from uniformly random codes, as strings."""
    check_text_model(model)
    return sequences_to_text(model.sample(n, generator=generator))


def reconstruct_lines(model, data: torch.Tensor, *, stages: int | None = None, policy=None) -> list[str]:
    """Reconstructions of data (B, 1, L) as strings (``policy`` as in :meth:`VQDraw.encode`)."""
    check_text_model(model)
    return sequences_to_text(model.reconstruct(data, stages=stages, policy=policy))


def stage_lines(model, data: torch.Tensor, stages=None) -> list[tuple[int, list[str]]]:
    """[(s, strings decoded from the first s codes)] for s in ``stages`` (default 1..N)."""
    check_text_model(model)
    codes = model.encode(data)
    stages = range(1, model.stages + 1) if stages is None else stages
    return [(s, sequences_to_text(model.decode(codes, stages=s))) for s in stages]


def default_stage_points(n: int) -> list[int]:
    points = sorted({1, 2, 5, *range(10, n + 1, 10), n})
    return [s for s in points if s <= n]


def stage_report(model, data: torch.Tensor, stages=None, *, batch: int = 64) -> list[dict]:
    """Character accuracy and cross-entropy by stage for data (B, 1, L) of a text model.

    Greedy codes of all stages are found once; the canvas after s stages is their prefix decoded.
    ``bits_per_char`` is the categorical likelihood's cross-entropy of the true characters given
    that canvas (what the model still does not know after s codes), ``code_bits_per_char`` what the
    s codes cost (s * log2 K / L); their sum is an upper bound on a lossless code's length.
    """
    check_text_model(model)
    stages = default_stage_points(model.stages) if stages is None else list(stages)
    like = model.likelihood
    length = model.config.data_shape[-1]
    totals = {s: [0.0, 0.0] for s in stages}  # nats, correct
    count = 0
    for i in range(0, len(data), batch):
        x = data[i: i + batch].to(model.device)
        codes = model.encode(x)
        classes = like.target(x).long()
        for s in stages:
            canvas = run_inference(model.refiner, like, s, codes=codes[:, :s], options=model.loop).canvas
            with torch.inference_mode():
                nats = like._nll(canvas, classes)
                correct = (torch.round(like.to_data(canvas) * (VOCAB_SIZE - 1)).long() == classes).float()
            totals[s][0] += nats.sum().item()
            totals[s][1] += correct.sum().item()
        count += classes.numel()
    log2k = math.log2(model.options)
    return [{"stages": s, "char_accuracy": totals[s][1] / max(count, 1),
             "bits_per_char": totals[s][0] / max(count, 1) / math.log(2),
             "code_bits_per_char": s * log2k / length} for s in stages]


def lossless_bits_per_char(text: str) -> dict[str, float]:
    """gzip (level 9), bz2 (level 9) and lzma (preset 9) bits per character of ``text``'s UTF-8 bytes
    (lossless; a VQ-DRAW code is lossy)."""
    raw = text.encode("utf-8")
    chars = max(len(text), 1)
    return {"gzip": 8 * len(gzip.compress(raw, 9, mtime=0)) / chars,
            "bz2": 8 * len(bz2.compress(raw, 9)) / chars,
            "lzma": 8 * len(lzma.compress(raw, preset=9)) / chars,
            "utf-8 bytes": 8 * len(raw) / chars}


def known_fraction(text: str) -> float:
    """The fraction of ``text``'s characters inside the vocabulary (the rest decode as U+FFFD)."""
    return float((encode_characters(text) != 0).mean()) if text else 1.0


def format_lines(lines: list[str], width: int | None = None) -> str:
    """Strings one per line, newlines and tabs shown as ⏎ and ⇥ so each sequence stays one line."""
    out = [s.replace("\n", "⏎").replace("\t", "⇥").replace("\r", "␍") for s in lines]
    return "\n".join(o if width is None else o[:width] for o in out) + "\n"
