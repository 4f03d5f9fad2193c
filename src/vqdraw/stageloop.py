"""The stage loop: the one place where Algorithms 1 and 2 run, for encoding, decoding and training.

    canvas X' = 0 (the zero canvas)
    for stage i:
        deltas   D_i,1..K = refiner_i(X')                    (B, K, C, *S)
        losses   L(X' + D_i,j, X)   by the likelihood         (B, K)      (when a target X is given)
        c_i = argmin_j losses   (encode)   or  given   (decode)
        X' = X' + D_i,c_i                                     (B, C, *S)

:func:`run` is that loop. :func:`run_checkpointed` runs it segment by segment under gradient
checkpointing (training with less memory), :func:`run_inference` runs it without autograd in
cache-sized chunks (encode, decode). Beam search (:mod:`vqdraw.search`) widens it.

How the loop is arranged for speed, none of it changing results beyond float rounding, is set by a
frozen :class:`LoopOptions`:

* Images that share a canvas share the refiner's work. The zero canvas is refined once for the
  whole batch. After a shared stage the batch holds few distinct canvases (a trained MNIST model
  gives ~10 distinct first-stage codes in a batch of 32, ~23 in 256): while the distinct
  canvases, rounded up to a multiple of ``group_bucket``, number at most ``group_fraction`` x B,
  the refiner runs on those only (``unique``, with ``group`` mapping images to them). On the CPU
  they are found with ``torch.unique``; elsewhere, to avoid a host synchronisation, only while
  all U*K candidates are fewer than B.
* The likelihood scores options without forming proposals where it can (the mse fast path);
  gradients reach every option through the losses and the chosen path through the canvas.

Encoding and decoding the same codes take the same path, so decode reproduces the encoder's
canvas bit for bit.

The paper's alternatives change what the loop computes, not how fast: ε-exploration and gradient
decay (an :class:`Exploration`, passed explicitly by training) and a refiner without residual
outputs (``refiner.residual`` False) run the loop written plainly, :func:`_run_plain`, one canvas
per image; the default path above never looks at them beyond one branch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from .losses import widen


@dataclass(frozen=True)
class LoopOptions:
    """Speed knobs of the stage loop (none changes a result beyond float rounding)."""

    dedup: bool | None = None
    """Find distinct canvases with torch.unique (a host read). None: on the CPU only."""
    group_fraction: float = 0.75
    """Refine distinct canvases only while they are at most this share of the batch."""
    group_bucket: int = 8
    """Distinct canvases are refined in batches of a multiple of this (few distinct kernel shapes)."""
    cpu_chunk: int = 64
    """Encode/decode on the CPU this many items at a time (activations stay in cache)."""
    exact_group_size: bool | None = None
    """Read the largest group's size back to the host when scoring grouped options. None: CPU only."""


@dataclass(frozen=True)
class Exploration:
    """Training-time changes to the stage loop (the paper's §3.3 alternatives; off by default).
    Not speed knobs: they change the choices and the gradients."""

    epsilon: float = 0.0
    """Each image's arg-min choice is replaced, with this probability, by an option drawn
    uniformly from [0, K) (torch's global generator); the canvas follows the replaced choice."""
    grad_decay: float = 0.0
    """The canvas entering each stage is ``c.detach() * g + c * (1 - g)``: same value, its
    gradient scaled by (1 - g) per stage; 1 stops gradients between stages."""

    @property
    def active(self) -> bool:
        return self.epsilon > 0 or self.grad_decay > 0


@dataclass
class EncodeResult:
    """What encoding yields besides the codes (Algorithm 1 gives the reconstruction for free)."""

    codes: torch.Tensor
    """(B, n) int64 chosen options."""
    reconstruction: torch.Tensor
    """(B, C, *S) data in [0, 1] after the n stages."""
    losses: torch.Tensor
    """(B, n, K) loss of every option at every stage (mse: normalised squared error)."""


@dataclass
class Trace:
    """A run of stages: codes (B, n), final canvas (B, C, *S), losses (B, n, K) or None (decoding)."""

    codes: torch.Tensor
    canvas: torch.Tensor
    losses: torch.Tensor | None


def run(refiner, likelihood, stages: range, *, target: torch.Tensor | None = None,
        codes: torch.Tensor | None = None, canvas: torch.Tensor | None = None,
        options: LoopOptions = LoopOptions(), explore: Exploration | None = None) -> Trace:
    """Run `stages` from `canvas` (None: the zero canvas). Choose the arg-min option (`target`
    given, `codes` None) or follow `codes` (B, len(stages)); per-option losses are computed
    whenever a target is given. ``explore``: training's ε-exploration / gradient decay."""
    if target is None and codes is None:
        raise ValueError("the stage loop needs a target to choose options or the codes to follow")
    if (explore is not None and explore.active) or not getattr(refiner, "residual", True):
        return _run_plain(refiner, likelihood, stages, target, codes, canvas, explore or Exploration())
    ref = target if target is not None else codes
    b = canvas.shape[0] if canvas is not None else ref.shape[0]
    device = canvas.device if canvas is not None else ref.device
    shape = (b, *refiner.first_bias.shape[1:])  # (B, C, *S)
    group = unique = None
    if canvas is None or (not canvas.requires_grad and not bool(canvas.any())):
        # one canvas for all images: refine it once (ties to the batch come back via `group`)
        unique = torch.zeros((1, *shape[1:]), device=device)
        group = torch.zeros(b, dtype=torch.long, device=device)
        canvas = None
    on_cpu = device.type == "cpu"
    dedup = on_cpu if options.dedup is None else options.dedup and on_cpu  # unique's size needs the host
    exact = on_cpu if options.exact_group_size is None else options.exact_group_size
    k = refiner.first_bias.shape[0]
    chosen, losses = [], []
    for j, stage in enumerate(stages):
        if group is not None:
            deltas = refiner.deltas(unique, stage)  # (U, K, C, *S)
            canvas = unique[group] if unique.shape[0] > 1 else unique.expand(shape)
        else:
            deltas = refiner.deltas(canvas, stage)  # (B, K, C, *S)
        follow = None if codes is None else codes[:, j]
        if target is not None:
            stage_losses, choice, picked = likelihood.select(
                deltas, canvas, target, follow, group, exact_size=exact, reuse_deltas=True)
            losses.append(stage_losses)
        else:
            rows = group if group is not None else torch.arange(b, device=device)
            choice = follow
            picked = widen(deltas.flatten(2)[rows, choice]).view(shape)
        chosen.append(choice)
        if group is not None:
            regrouped = _regroup(unique, group, deltas, choice, k, b, dedup, options)
            if regrouped is not None:
                unique, group = regrouped
                continue
            # back to one canvas per image; gradients flow through the chosen path only
            canvas = picked if unique.shape[0] == 1 else canvas + picked
            group = unique = None
        else:
            canvas = canvas + picked  # gradients flow through the chosen path only
    if group is not None:
        canvas = unique[group] if unique.shape[0] > 1 else unique.expand(shape).clone()
    return Trace(
        codes=torch.stack(chosen, 1) if chosen else torch.zeros((b, 0), dtype=torch.long, device=device),
        canvas=canvas,
        losses=torch.stack(losses, 1) if losses else None,
    )


def _run_plain(refiner, likelihood, stages: range, target, codes, canvas, explore: Exploration) -> Trace:
    """The loop written plainly, one canvas per image, with the paper's alternatives: proposals
    without residual outputs (``refiner.residual`` False: the canvas is replaced by the chosen
    output), ε-exploration and gradient decay (``explore``)."""
    ref = target if target is not None else codes
    b = canvas.shape[0] if canvas is not None else ref.shape[0]
    shape = (b, *refiner.first_bias.shape[1:])  # (B, C, *S)
    if canvas is None:
        canvas = torch.zeros(shape, device=ref.device)
    residual = getattr(refiner, "residual", True)
    k = refiner.first_bias.shape[0]
    rows = torch.arange(b, device=ref.device)
    g = explore.grad_decay
    chosen, losses = [], []
    for j, stage in enumerate(stages):
        if g:
            canvas = canvas.detach() * g + canvas * (1 - g)  # same value, gradient scaled by 1 - g
        deltas = refiner.deltas(canvas, stage)  # (B, K, C, *S); the proposals themselves if not residual
        base = canvas if residual else torch.zeros_like(canvas)
        choice = None if codes is None else codes[:, j]
        if target is not None:
            stage_losses, choice, _ = likelihood.select(deltas, base, target, choice)
            losses.append(stage_losses)
            if codes is None and explore.epsilon > 0:
                explore_here = torch.rand(b, device=ref.device) < explore.epsilon
                choice = torch.where(explore_here, torch.randint(0, k, (b,), device=ref.device), choice)
        picked = widen(deltas.flatten(2)[rows, choice]).view(shape)
        canvas = base + picked  # gradients flow through the chosen path only
        chosen.append(choice)
    return Trace(
        codes=torch.stack(chosen, 1) if chosen else torch.zeros((b, 0), dtype=torch.long, device=ref.device),
        canvas=canvas,
        losses=torch.stack(losses, 1) if losses else None,
    )


def _regroup(unique, group, deltas, choice, k: int, b: int, dedup: bool, options: LoopOptions):
    """The distinct canvases after this stage's choices, as (unique, group), or None when they
    are too many to be worth sharing (the loop then holds one canvas per image)."""
    if dedup:
        ids, inverse = torch.unique(group * k + choice, return_inverse=True)
        bucket = options.group_bucket
        padded = -(-len(ids) // bucket) * bucket
        if padded > options.group_fraction * b:
            return None
        # padded with repeats of the first (never referenced by `group`): few distinct batch
        # sizes, so oneDNN (and torch.compile) reuse their kernels instead of building new ones
        ids = torch.cat([ids, ids[:1].expand(padded - len(ids))])
        src = ids.div(k, rounding_mode="floor")
        return unique[src] + widen(deltas[src, ids - src * k]), inverse
    if unique.shape[0] * k < b:  # all U*K candidates: fewer than the images, no host sync
        return (unique.unsqueeze(1) + widen(deltas)).flatten(0, 1), group * k + choice
    return None


def run_checkpointed(refiner, likelihood, target: torch.Tensor, stages: int, segment: int,
                     options: LoopOptions = LoopOptions(), explore: Exploration | None = None) -> Trace:
    """Like :func:`run` with a target, recomputing each segment's activations during backward
    (the recomputation replays torch's random state, so ε-exploration draws the same options)."""
    canvas = None  # the zero canvas
    codes, losses = [], []
    for start in range(0, stages, segment):
        span = range(start, min(start + segment, stages))

        def run_segment(c: torch.Tensor | None, span: range = span):
            t = run(refiner, likelihood, span, target=target, canvas=c, options=options, explore=explore)
            return t.canvas, t.losses, t.codes

        canvas, seg_losses, seg_codes = checkpoint(run_segment, canvas, use_reentrant=False)
        codes.append(seg_codes)
        losses.append(seg_losses)
    return Trace(torch.cat(codes, 1), canvas, torch.cat(losses, 1))


def run_inference(refiner, likelihood, n: int, *, target: torch.Tensor | None = None,
                  codes: torch.Tensor | None = None, options: LoopOptions = LoopOptions()) -> Trace:
    """:func:`run` from the zero canvas for encoding (`target`) or decoding (`codes`, or both:
    follow the codes and report their losses), without autograd. On the CPU the batch runs
    ``options.cpu_chunk`` items at a time: a batch of 256 MNIST images has 51 MB activations per
    layer, and oneDNN's convolutions run ~1.5x slower per image once they no longer fit the
    caches. Each item's arithmetic is the same, and encode and decode chunk alike."""
    ref = target if target is not None else codes
    b = ref.shape[0]
    shape = refiner.first_bias.shape[1:]
    with torch.inference_mode():
        if b == 0:  # an empty batch: empty results of the right shapes
            k = refiner.first_bias.shape[0]
            return Trace(torch.zeros((0, n), dtype=torch.long, device=ref.device),
                         torch.zeros((0, *shape), device=ref.device),
                         None if target is None else torch.zeros((0, n, k), device=ref.device))
        step = options.cpu_chunk if ref.device.type == "cpu" else b
        parts = []
        for i in range(0, b, step):
            t = None if target is None else target[i: i + step]
            c = None if codes is None else codes[i: i + step]
            parts.append(run(refiner, likelihood, range(n), target=t, codes=c, options=options))
    if len(parts) == 1:
        return parts[0]
    losses = None if parts[0].losses is None else torch.cat([p.losses for p in parts])
    return Trace(torch.cat([p.codes for p in parts]), torch.cat([p.canvas for p in parts]), losses)
