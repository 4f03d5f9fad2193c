"""The prior's coding probabilities in exact integer arithmetic: the same frequencies on every machine.

An entropy-coded ``.vqd`` file decodes only if the decoder computes exactly the probabilities the
encoder used, bit for bit. Floating-point networks do not promise that across thread counts, batch
sizes, BLAS libraries or devices. So the prior's GRU (:mod:`vqdraw.prior`) is run for coding in
fixed-point integers, where every sum and product is exact and the order of operations cannot
matter:

* weights and embeddings are rounded (half to even, from their float32 values) to multiples of
  ``2**-14``; biases to multiples of ``2**-28``, the scale of a product;
* every matrix product multiplies whole numbers whose partial sums all stay below 2**53 in
  magnitude (weights are at most 64, widths at most 1024: see :func:`exact_matmul`), so it is
  computed exactly by a float64 matmul (fast BLAS), in any order, on any number of threads;
* rescaling is a floor shift (``>>``);
* ``tanh`` and the logistic function (``sigmoid(x) = (1 + tanh(x/2)) / 2``) come from one table of
  ``tanh`` on ``[-8, 8]`` in steps of ``1/256``, with linear interpolation in integers; ``exp`` on
  ``[-16, 0]`` likewise. The tables are computed with Python's :mod:`decimal` (correctly rounded
  ``exp``), never with the platform's maths library;
* the output logits become integer frequencies that sum to ``2**24``, each at least 1 and at most
  ``3/4`` of the total (:func:`frequencies`).

The exact rules are in docs/vqd-format.md (version 3) and docs/prior.md. numpy only; no torch.
"""

from __future__ import annotations

import functools
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

import numpy as np

__all__ = [
    "ACT_BITS",
    "MAX_FREQUENCY",
    "PRECISION",
    "TOTAL",
    "ExactGRU",
    "frequencies",
    "quantize",
]

ACT_BITS = 14
"""Fraction bits of activations, embeddings and weights (values are multiples of 2**-14)."""
ACC_BITS = 2 * ACT_BITS
"""Fraction bits of a product or a sum of products (and of the biases)."""
STEP_BITS = 8
"""Table steps of 2**-8 (in the tables' argument: nats for exp, units for tanh)."""
FRAC_BITS = 12
"""Bits of the interpolation fraction between two table entries."""
TANH_RANGE = 8
"""tanh is tabulated on [-8, 8] (beyond it: the end values)."""
EXP_RANGE = 16
"""exp is tabulated on [-16, 0] (logits more than 16 nats below the largest: its end value)."""
EXP_BITS = 30
"""exp values are multiples of 2**-30 (exp(0) = 2**30)."""
PRECISION = 24
TOTAL = 1 << PRECISION
"""Every row of frequencies sums to 2**24 (the range coder's precision)."""
MAX_FREQUENCY = TOTAL - TOTAL // 4
"""No code gets more than 3/4 of the total: every code costs at least log2(4/3) = 0.415 bits,
which bounds the codes a file of a given size can hold (docs/vqd-format.md)."""


EXACT_LIMIT = 1 << 53
"""Integers up to this magnitude are exact in float64: so is every partial sum of a product below it."""


def exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` of int64 matrices, exactly, through float64 BLAS: every partial sum of the product
    is bounded by ``sum |a_ik| |b_kj|``, and while that stays below 2**53 every one is a whole
    number float64 holds exactly, so the order of additions, fused multiply-adds, blocking and
    threads cannot change the result. The bound is checked (a ValueError otherwise)."""
    bound = int(np.abs(a).max(initial=0)) * int(np.abs(b).max(initial=0)) * a.shape[1]
    if bound >= EXACT_LIMIT:
        raise ValueError(f"integer product too large for exact float64 arithmetic ({bound:.3g} >= 2**53)")
    return (a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)


def quantize(values, bits: int = ACT_BITS) -> np.ndarray:
    """Float values as int64 multiples of ``2**-bits``: round half to even of ``value * 2**bits``
    in float64 (exact for float32 inputs: a power-of-two scaling loses nothing)."""
    return np.round(np.asarray(values, dtype=np.float64) * float(1 << bits)).astype(np.int64)


def _decimal_table(count: int, value) -> np.ndarray:
    with localcontext() as ctx:
        ctx.prec = 40
        return np.array([int(value(Decimal(j)).to_integral_value(rounding=ROUND_HALF_EVEN))
                         for j in range(count)], dtype=np.int64)


@functools.lru_cache(maxsize=None)
def tanh_table() -> np.ndarray:
    """``T[j] = round(tanh(j/256 - 8) * 2**14)`` for j = 0..4096 (exact decimal arithmetic)."""
    scale = Decimal(1 << ACT_BITS)
    steps = 1 << STEP_BITS

    def value(j):
        e = (2 * (j / steps - TANH_RANGE)).exp()
        return (e - 1) / (e + 1) * scale

    table = _decimal_table(2 * TANH_RANGE * steps + 1, value)
    table.setflags(write=False)
    return table


@functools.lru_cache(maxsize=None)
def exp_table() -> np.ndarray:
    """``E[j] = round(exp(-j/256) * 2**30)`` for j = 0..4096 (exact decimal arithmetic)."""
    scale = Decimal(1 << EXP_BITS)
    steps = 1 << STEP_BITS
    table = _decimal_table(EXP_RANGE * steps + 1, lambda j: (-j / steps).exp() * scale)
    table.setflags(write=False)
    return table


def _interpolate(table: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``table`` read at ``v / 2**FRAC_BITS`` (v int64 in [0, (len(table) - 1) * 2**FRAC_BITS)),
    linearly interpolated with a floor shift."""
    i = v >> FRAC_BITS
    a = table[i]
    return a + (((table[i + 1] - a) * (v & ((1 << FRAC_BITS) - 1))) >> FRAC_BITS)


_SHIFT = ACC_BITS - STEP_BITS - FRAC_BITS  # accumulator scale -> table argument scale


def tanh_q(pre: np.ndarray, halve: bool = False) -> np.ndarray:
    """tanh of accumulators (multiples of 2**-28; of half their value with ``halve``) as multiples of 2**-14."""
    span = TANH_RANGE << (STEP_BITS + FRAC_BITS)
    v = np.clip((pre >> (_SHIFT + int(halve))) + span, 0, 2 * span - 1)
    return _interpolate(tanh_table(), v)


def sigmoid_q(pre: np.ndarray) -> np.ndarray:
    """The logistic function of accumulators (2**-28) as multiples of 2**-14: (1 + tanh(x/2)) / 2."""
    return ((1 << ACT_BITS) + tanh_q(pre, halve=True)) >> 1


def frequencies(logits: np.ndarray) -> np.ndarray:
    """Integer frequencies (B, K) from integer logits (B, K) (multiples of 2**-28): each row sums to
    :data:`TOTAL`, every entry is in ``[1, MAX_FREQUENCY]``.

    1. ``d = (logit - max logit) >> 8`` (multiples of 2**-20 nats, <= 0), clipped at -16 nats;
    2. ``w = exp(d)`` from the table (multiples of 2**-30; the largest is 2**30);
    3. ``g = floor(w * (TOTAL - K) / sum(w))``; what the floors leave (fewer than K) goes to the
       first largest ``w``; ``frequency = g + 1``;
    4. a frequency above ``MAX_FREQUENCY`` is lowered to it, and the excess is shared equally
       among the other codes, the first ``excess mod (K - 1)`` of them (in code order) one more.
    """
    logits = np.asarray(logits, dtype=np.int64)
    rows, K = logits.shape
    span = EXP_RANGE << (STEP_BITS + FRAC_BITS)
    d = (logits - logits.max(axis=1, keepdims=True)) >> _SHIFT
    w = _interpolate(exp_table(), np.clip(-d, 0, span - 1))
    free = TOTAL - K
    g = (w * free) // w.sum(axis=1, keepdims=True)
    top = w.argmax(axis=1)
    r = np.arange(rows)
    g[r, top] += free - g.sum(axis=1)
    over = g[r, top] - (MAX_FREQUENCY - 1)
    hit = np.flatnonzero(over > 0)
    if hit.size:
        excess = over[hit]
        g[hit, top[hit]] = MAX_FREQUENCY - 1
        others = np.ones((hit.size, K), dtype=bool)
        others[np.arange(hit.size), top[hit]] = False
        rank = np.cumsum(others, axis=1) - 1  # position among the other codes
        share = (excess // (K - 1))[:, None] + (rank < (excess % (K - 1))[:, None])
        g[hit] += np.where(others, share, 0)
    return g + 1


class ExactGRU:
    """The prior's network (embeddings, one GRU layer, output layer and per-stage output bias) in
    fixed-point integers: :meth:`step` gives the next hidden state and the integer logits.

    ``weights``: the float arrays of :class:`vqdraw.prior.PriorNet` (its state dict as numpy).
    Same equations as ``torch.nn.GRU``: r = σ(W_ir x + b_ir + W_hr h + b_hr), z likewise,
    n = tanh(W_in x + b_in + r (W_hn h + b_hn)), h' = n + z (h - n).
    """

    def __init__(self, weights: dict[str, np.ndarray]):
        self.code_embedding = quantize(weights["code_embedding.weight"])  # (K + 1, E)
        self.stage_embedding = quantize(weights["stage_embedding.weight"])  # (N, E)
        self.w_ih = np.ascontiguousarray(quantize(weights["gru.weight_ih_l0"]).T)  # (E, 3H)
        self.w_hh = np.ascontiguousarray(quantize(weights["gru.weight_hh_l0"]).T)  # (H, 3H)
        self.b_ih = quantize(weights["gru.bias_ih_l0"], ACC_BITS)
        self.b_hh = quantize(weights["gru.bias_hh_l0"], ACC_BITS)
        self.w_out = np.ascontiguousarray(quantize(weights["out.weight"]).T)  # (H, K)
        self.b_out = quantize(weights["out.bias"], ACC_BITS)
        self.stage_bias = quantize(weights["stage_bias"], ACC_BITS)  # (N, K)
        self.hidden = self.w_hh.shape[0]
        self.options = self.w_out.shape[1]
        self.stages = self.stage_embedding.shape[0]

    def start(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(hidden state, previous codes) before stage 0: zeros, and the start token K."""
        return np.zeros((count, self.hidden), dtype=np.int64), np.full(count, self.options, dtype=np.int64)

    def step(self, h: np.ndarray, previous: np.ndarray, stage: int) -> tuple[np.ndarray, np.ndarray]:
        """One stage: (h (B, H), previous codes (B,) (K before stage 0)) -> (new h, logits (B, K))."""
        x = self.code_embedding[previous] + self.stage_embedding[stage]
        H = self.hidden
        gi = exact_matmul(x, self.w_ih) + self.b_ih
        gh = exact_matmul(h, self.w_hh) + self.b_hh
        r = sigmoid_q(gi[:, :H] + gh[:, :H])
        z = sigmoid_q(gi[:, H:2 * H] + gh[:, H:2 * H])
        n = tanh_q(gi[:, 2 * H:] + ((r * gh[:, 2 * H:]) >> ACT_BITS))
        h = n + ((z * (h - n)) >> ACT_BITS)
        return h, exact_matmul(h, self.w_out) + self.b_out + self.stage_bias[stage]

    def frequencies(self, codes: np.ndarray) -> np.ndarray:
        """Frequencies (B, n, K) of every stage of ``codes`` (B, n) given the codes before it."""
        codes = np.asarray(codes, dtype=np.int64)
        count, n = codes.shape
        h, previous = self.start(count)
        out = np.empty((count, n, self.options), dtype=np.int64)
        for t in range(n):
            h, logits = self.step(h, previous, t)
            out[:, t] = frequencies(logits)
            previous = codes[:, t]
        return out
