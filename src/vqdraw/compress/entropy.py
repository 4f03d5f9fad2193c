"""Range coding of VQ-DRAW codes with the prior's exact integer frequencies (``.vqd`` version 3).

The payload of an entropy-coded file is one range-coded stream (the ``constriction`` package's
``RangeEncoder``: 32-bit words, 24-bit probabilities) of every code of every item. Items are taken
in blocks of ``block`` (the header's block field); within a block, stage by stage: all the block's
stage-0 codes, then its stage-1 codes, and so on. So a decoder runs the prior on a whole block at a
time, stage by stage, and its memory is bounded by the block size, whatever the item count.

Each code is coded with the frequencies of :mod:`vqdraw.compress.fixedpoint` (integers summing to 2**24,
each at least 1). constriction's ``Categorical`` model takes them as float64 ``frequency - 1``
(whole numbers summing to ``2**24 - K``), which it turns back into exactly these frequencies: its
quantiser adds 1 to ``floor(cumulative * scale)`` with ``scale = 1.0``, exact for whole numbers
below 2**53. numpy and constriction only; no torch.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

__all__ = ["decode_codes", "encode_codes", "require_constriction"]


def require_constriction():
    """The constriction package, or a one-line InputError saying how to install it."""
    try:
        import constriction
    except ImportError:
        raise InputError("entropy-coded .vqd files need the constriction package: "
                         "pip install 'vqdraw[prior]'") from None
    return constriction


def _blocks(count: int, block: int):
    for start in range(0, count, block):
        yield start, min(count, start + block)


def encode_codes(exact, codes: np.ndarray, block: int) -> bytes:
    """The range-coded payload (little-endian 32-bit words) of ``codes`` (B, n), integers in
    ``[0, K)``, under ``exact`` (a :class:`vqdraw.compress.fixedpoint.ExactGRU`)."""
    constriction = require_constriction()
    codes = np.asarray(codes, dtype=np.int64)
    encoder = constriction.stream.queue.RangeEncoder()
    family = constriction.stream.model.Categorical(perfect=False)
    from .fixedpoint import frequencies

    for start, stop in _blocks(codes.shape[0], block):
        part = codes[start:stop]
        h, previous = exact.start(stop - start)
        for t in range(codes.shape[1]):
            h, logits = exact.step(h, previous, t)
            free = (frequencies(logits) - 1).astype(np.float64)
            encoder.encode(part[:, t].astype(np.int32), family, free)
            previous = part[:, t]
    return encoder.get_compressed().astype("<u4").tobytes()


def decode_codes(exact, payload: bytes, count: int, n: int, block: int, error=ValueError) -> np.ndarray:
    """Inverse of :func:`encode_codes`: codes (count, n) int64. The payload must be exactly the
    stream :func:`encode_codes` writes for those codes, or ``error`` is raised: an error inside the
    decoder, a decoder that needs words past the end of the payload, words left over after the
    last code, a payload for no codes.

    The decoded codes are range-coded again in step with the decoding (with the same
    frequencies, so it costs a fraction of the prior's arithmetic) and the result must be the
    payload, word for word. As soon as that re-encoding holds more words than the payload (the
    decoder is reading past its end, where constriction would supply zero words), decoding stops:
    so its cost is bounded by the payload's real size, whatever ``count`` declares."""
    constriction = require_constriction()
    if len(payload) % 4:
        raise error(f"corrupt .vqd payload: {len(payload)} bytes is not a whole number of 32-bit words")
    words = np.frombuffer(bytes(payload), dtype="<u4").astype(np.uint32)
    if count == 0 or n == 0:
        if len(words):
            raise error(f"corrupt .vqd payload: {len(payload)} bytes for no codes (must be empty)")
        return np.zeros((count, n), dtype=np.int64)
    decoder = constriction.stream.queue.RangeDecoder(words)
    again = constriction.stream.queue.RangeEncoder()
    family = constriction.stream.model.Categorical(perfect=False)
    from .fixedpoint import frequencies

    overrun = error(f"corrupt .vqd payload: the {count} items it declares need more than its "
                    f"{len(payload)} bytes (the range decoder ran past the end)")
    out = np.empty((count, n), dtype=np.int64)
    for start, stop in _blocks(count, block):
        h, previous = exact.start(stop - start)
        for t in range(n):
            h, logits = exact.step(h, previous, t)
            free = (frequencies(logits) - 1).astype(np.float64)
            try:
                previous = np.asarray(decoder.decode(family, free), dtype=np.int64)
            except (ValueError, RuntimeError, AssertionError, OverflowError) as exc:
                raise error(f"corrupt .vqd payload: the range decoder failed ({exc})") from None
            again.encode(previous.astype(np.int32), family, free)
            out[start:stop, t] = previous
            # num_words() is the re-encoding's length were it to end here (its words plus the one or
            # two that seal it); going on can take back at most one of the sealing words.
            if again.num_words() - 1 > len(words):
                raise overrun
    if out.min() < 0 or out.max() >= exact.options:
        raise error(f"corrupt .vqd payload: a code outside [0, {exact.options})")
    canonical = again.get_compressed()
    if len(canonical) > len(words):
        raise overrun
    if len(canonical) < len(words):
        raise error(f"corrupt .vqd payload: {4 * (len(words) - len(canonical))} bytes left over after the last code")
    if not np.array_equal(canonical.astype(np.uint32), words):
        raise error("corrupt .vqd payload: the range-coded words are not the ones its codes encode to "
                    "(altered or appended data)")
    return out
