"""The stage loop: the one place where Algorithms 1 and 2 run, and the only caller of the refiner
over stages (encode, decode, training, beam search, the NLL bound, distillation).

    canvas X' = 0 (the zero canvas)
    for stage i:
        deltas   D_i,1..K = refiner_i(X')                    (R, K, C, *S)   R candidate canvases
        losses   L(X' + D_i,j, X)   by the likelihood         (R, K)          (when a target X is given)
        choice   by a policy                                  greedy arg-min, given codes, beam(M),
                                                              epsilon-exploration, relaxed (soft)
        X' = X' + D_i,choice                                  (R', C, *S)

:func:`step` is one stage of that loop for any :class:`Policy`: :class:`Greedy`, :class:`Follow`,
:class:`Explore`, :class:`Beam` and :class:`Relaxed`. :func:`run` is the loop for the two
policies every encode, decode and training step uses (greedy, or follow the codes given and
greedy after them), arranged for speed as described below; :func:`run_plain` is the loop
written plainly over :func:`step` for every other policy (and for the paper's ablations), and
:func:`beam_stages` and :func:`run_relaxed` drive :func:`step` for beam search and distillation.
:func:`run_checkpointed` runs :func:`run` segment by segment under gradient checkpointing,
:func:`run_inference` without autograd in cache-sized chunks.

How :func:`run` is arranged for speed, none of it changing results beyond float rounding, is set
by a frozen :class:`LoopOptions`:

* Images that share a canvas share the refiner's work. The zero canvas is refined once for the
  whole batch; after a shared stage the batch holds few distinct canvases. While the distinct
  canvases, rounded up to a multiple of ``group_bucket``, number at most ``group_fraction`` x B,
  the refiner runs on those only (``unique``, with ``group`` mapping images to them). On the CPU
  they are found with ``torch.unique``; elsewhere, to avoid a host synchronisation, only while
  all U*K candidates are fewer than B.
* A likelihood with a squared-error fast path (``Likelihood.squared_error``) is scored without
  forming proposals (:func:`vqdraw.core.losses.select_option`), grouped canvases included; others are
  scored by their generic :meth:`~vqdraw.core.likelihood.Likelihood.select`.

Encoding and decoding the same codes take the same path, so decode reproduces the encoder's
canvas bit for bit. The reference loop (:mod:`vqdraw.core.reference`) is the tests' yardstick.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from .losses import select_option, widen


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
    """Run `stages` from `canvas` (None: the zero canvas), one canvas per image. Follow `codes`
    (B, s) for the first s stages and choose the arg-min after them (a target is then needed);
    per-option losses are computed whenever a target is given. ``explore``: training's
    epsilon-exploration / gradient decay (the plain loop, :func:`run_plain`)."""
    if target is None and (codes is None or codes.shape[1] < len(stages)):
        raise ValueError("the stage loop needs a target to choose options or the codes to follow")
    if (explore is not None and explore.active) or not getattr(refiner, "residual", True):
        return run_plain(refiner, likelihood, stages, _policy(codes, explore, refiner.first_bias.shape[0]), target=target, canvas=canvas,
                         grad_decay=explore.grad_decay if explore is not None else 0.0)
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
    fast = getattr(likelihood, "squared_error", False)
    k = refiner.first_bias.shape[0]
    given = 0 if codes is None else codes.shape[1]
    chosen, losses = [], []
    for j, stage in enumerate(stages):
        if group is not None:
            deltas = refiner.deltas(unique, stage)  # (U, K, C, *S)
            canvas = unique[group] if unique.shape[0] > 1 else unique.expand(shape)
        else:
            deltas = refiner.deltas(canvas, stage)  # (B, K, C, *S)
        follow = codes[:, j] if j < given else None
        if target is not None:
            if fast:  # no proposals formed; grouped canvases scored in place
                stage_losses, choice, picked = select_option(deltas, target - canvas, follow, group,
                                                             reuse_deltas=True, exact_size=exact)
            else:
                stage_losses, choice, picked = likelihood.select(
                    deltas if group is None else deltas[group], canvas, target, follow)
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


# ---------------------------------------------------------------------- one stage, many policies
@dataclass
class Step:
    """One stage's outcome for R candidate canvases (see :func:`step`)."""

    canvas: torch.Tensor
    """(R', C, *S) the canvases after the stage."""
    choice: torch.Tensor
    """(R',) int64 the option each new canvas took."""
    rows: torch.Tensor
    """(R',) the input canvas each new canvas grew from (arange(R) unless the policy regroups)."""
    losses: torch.Tensor | None
    """(R, K) every option's loss for every input canvas (None without a target, or when the
    policy needs none)."""
    scores: torch.Tensor | None = None
    """Beam: (B, M') the kept children's losses, ascending per item."""


class Policy:
    """How a stage's option is chosen from the per-option losses (see :func:`step`)."""

    scores = True
    """Whether the policy reads the per-option losses (needs a target)."""

    def forced(self, j: int) -> torch.Tensor | None:
        """Options fixed in advance at the j-th stage of the run (the likelihood scores them)."""
        return None

    def choose(self, losses: torch.Tensor | None, choice: torch.Tensor | None, j: int
               ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """(rows or None for one child per canvas, choice, kept scores) from the losses (R, K)
        and the arg-min (or forced) choice the likelihood gave."""
        return None, choice, None

    def combine(self, base: torch.Tensor, deltas: torch.Tensor, rows: torch.Tensor | None, choice: torch.Tensor,
                j: int) -> torch.Tensor:
        """The new canvases: base (of row `rows`; None: each its own) + the chosen deltas (float32)."""
        index = torch.arange(base.shape[0], device=base.device) if rows is None else rows
        picked = widen(deltas.flatten(2)[index, choice]).view(len(index), *base.shape[1:])
        return (base if rows is None else base[rows]) + picked


class Greedy(Policy):
    """Algorithm 1: the arg-min option (ties to the lowest index)."""


class Follow(Policy):
    """Algorithm 2 and teacher forcing: the given codes (B, s), then the arg-min after them."""

    def __init__(self, codes: torch.Tensor):
        self.codes = codes

    def forced(self, j: int) -> torch.Tensor | None:
        return self.codes[:, j] if j < self.codes.shape[1] else None


class Explore(Policy):
    """The paper's epsilon-exploration (§3.3): each arg-min choice is replaced, with probability
    `epsilon`, by an option drawn uniformly from [0, K) (torch's global generator)."""

    def __init__(self, epsilon: float, options: int):
        self.epsilon, self.options = epsilon, options

    def choose(self, losses, choice, j):
        if self.epsilon > 0:
            b = choice.shape[0]
            explore_here = torch.rand(b, device=choice.device) < self.epsilon
            choice = torch.where(explore_here, torch.randint(0, self.options, (b,), device=choice.device), choice)
        return None, choice, None


class Beam(Policy):
    """Beam search: of the M*K children of each item's M canvases (rows item-major, R = B*M),
    keep the `width` with the lowest losses (a stable sort: ties to the lowest (beam, option)).
    ``Beam(width)`` is what a user passes (``model.encode(x, policy=Beam(8))``); the search sets
    ``items``, the batch it runs on."""

    def __init__(self, width: int, items: int | None = None):
        self.width, self.items = width, items

    def __repr__(self) -> str:
        return f"Beam({self.width})"

    def choose(self, losses, choice, j):
        b, k = self.items, losses.shape[1]
        m = losses.shape[0] // b
        keep = min(self.width, m * k)
        sorted_scores, order = losses.view(b, m * k).sort(dim=1, stable=True)
        order = order[:, :keep]  # (B, M')
        parent = torch.div(order, k, rounding_mode="floor")
        rows = (torch.arange(b, device=losses.device).unsqueeze(1) * m + parent).flatten()
        return rows, (order % k).flatten(), sorted_scores[:, :keep]


class Relaxed(Policy):
    """A soft choice for distillation: the new canvas is sum_j w_j (base + D_j) for weights
    (B, n, K) per stage (straight-through weights make it the hard choice's canvas in value,
    with the softmax's gradient); the choice reported is each stage's weight arg-max."""

    scores = False

    def __init__(self, weights: torch.Tensor):
        self.weights = weights

    def choose(self, losses, choice, j):
        return None, self.weights[:, j].argmax(dim=1), None

    def combine(self, base, deltas, rows, choice, j):
        w = self.weights[:, j].view(*self.weights.shape[::2], *([1] * (base.dim() - 1)))  # (B, K, 1, ...)
        return (w * (base.unsqueeze(1) + widen(deltas))).sum(1)


def step(refiner, likelihood, stage: int, canvas: torch.Tensor, policy: Policy, *,
         target: torch.Tensor | None = None, j: int = 0, share: torch.Tensor | None = None) -> Step:
    """Advance R candidate canvases (R, C, *S) by global stage `stage` (the j-th of this run),
    the option chosen by `policy`, scored against `target` (R, ...) when given.

    ``share`` (R, s): an id per canvas (its code prefix); canvases with equal ids are equal, so
    the refiner runs once per distinct id (beam search's prefix dedup)."""
    r = canvas.shape[0]
    if share is not None and share.shape[1] == 0:  # every canvas is the empty one
        deltas = refiner.deltas(canvas[:1], stage).expand(r, *([-1] * canvas.dim()))
    elif share is not None:
        ids, inverse = torch.unique(share, dim=0, return_inverse=True)
        if ids.shape[0] == r:
            deltas = refiner.deltas(canvas, stage)
        else:
            first = torch.full((ids.shape[0],), r, dtype=torch.long, device=canvas.device)
            first.scatter_reduce_(0, inverse, torch.arange(r, device=canvas.device), reduce="amin")
            deltas = refiner.deltas(canvas[first], stage)[inverse]
    else:
        deltas = refiner.deltas(canvas, stage)  # (R, K, C, *S); the proposals themselves if not residual
    base = canvas if getattr(refiner, "residual", True) else torch.zeros_like(canvas)
    forced = policy.forced(j)
    losses = choice = None
    if target is not None and (policy.scores or forced is not None):
        losses, choice, _ = likelihood.select(deltas, base, target, forced)
    elif forced is not None:
        choice = forced
    elif policy.scores:
        raise ValueError("this policy chooses by the losses: give a target")
    rows, choice, kept = policy.choose(losses, choice, j)
    new = policy.combine(base, deltas, rows, choice, j)
    return Step(new, choice, torch.arange(r, device=canvas.device) if rows is None else rows, losses, kept)


def _policy(codes: torch.Tensor | None, explore: Exploration | None, options: int) -> Policy:
    if codes is not None:
        return Follow(codes)
    if explore is not None and explore.epsilon > 0:
        return Explore(explore.epsilon, options)
    return Greedy()


def run_plain(refiner, likelihood, stages: range, policy: Policy, *, target: torch.Tensor | None = None,
              canvas: torch.Tensor | None = None, grad_decay: float = 0.0, batch: int | None = None) -> Trace:
    """The loop written plainly over :func:`step`, one canvas per image, for any one-child policy;
    also the paper's ablations: proposals without residual outputs (``refiner.residual`` False:
    the canvas is replaced by the chosen output) and gradient decay (the canvas entering each
    stage is ``c.detach() * g + c * (1 - g)``: same value, gradient scaled by 1 - g)."""
    ref = canvas if canvas is not None else target if target is not None else getattr(policy, "codes", None)
    b = batch if batch is not None else ref.shape[0]
    device = ref.device if ref is not None else refiner.first_bias.device
    if canvas is None:
        canvas = torch.zeros((b, *refiner.first_bias.shape[1:]), device=device)
    g = grad_decay
    chosen, losses = [], []
    for j, stage in enumerate(stages):
        if g:
            canvas = canvas.detach() * g + canvas * (1 - g)
        out = step(refiner, likelihood, stage, canvas, policy, target=target, j=j)
        canvas = out.canvas  # gradients flow through the chosen path only
        chosen.append(out.choice)
        if out.losses is not None:
            losses.append(out.losses)
    return Trace(
        codes=torch.stack(chosen, 1) if chosen else torch.zeros((b, 0), dtype=torch.long, device=device),
        canvas=canvas,
        losses=torch.stack(losses, 1) if losses else None,
    )


def run_relaxed(refiner, likelihood, weights: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Follow soft choices `weights` (B, n, K) from the zero canvas (:class:`Relaxed`); returns
    the likelihood's loss of the canvas after every stage, (B, n): differentiable in the weights."""
    policy = Relaxed(weights)
    canvas = torch.zeros((weights.shape[0], *refiner.first_bias.shape[1:]), device=weights.device)
    per_stage = []
    for j in range(weights.shape[1]):
        canvas = step(refiner, likelihood, j, canvas, policy, j=j).canvas
        per_stage.append(likelihood.option_losses(canvas.unsqueeze(1), target)[:, 0])
    return torch.stack(per_stage, 1)


@dataclass
class BeamStage:
    """The live beams after one stage of a beam search (best first per item)."""

    stage: int
    """Stages run so far (the codes' length)."""
    prefix: torch.Tensor
    """(B, M', s) int64 distinct live codes."""
    canvas: torch.Tensor
    """(B, M', C', *S) their canvases."""
    scores: torch.Tensor
    """(B, M') their losses, ascending."""
    option_scores: torch.Tensor
    """(B, M, K) every option's loss for every parent beam."""
    parent: torch.Tensor
    """(B, M') each survivor's parent beam."""


def beam_stages(refiner, likelihood, target: torch.Tensor, width: int, n: int, *, dedup: bool = True):
    """Beam search of width `width` over n stages for targets (B, ...): yields a
    :class:`BeamStage` per stage. Beams sharing a code prefix share a canvas, so the refiner
    runs once per distinct prefix (once at stage 0, at most K times at stage 1, ...; ``dedup``
    False: once per beam, the same result)."""
    b = target.shape[0]
    shape = tuple(refiner.first_bias.shape[1:])  # the canvas (C', *S): may differ from the data's
    k = refiner.first_bias.shape[0]
    policy = Beam(width, b)
    prefix = torch.zeros((b, 1, 0), dtype=torch.long, device=target.device)  # (B, M, s) live codes
    canvas = torch.zeros((b, 1) + shape, device=target.device)  # (B, M, C', *S)
    for stage in range(n):
        m = prefix.shape[1]
        per_target = target if m == 1 else target.repeat_interleave(m, dim=0)
        out = step(refiner, likelihood, stage, canvas.flatten(0, 1), policy, target=per_target, j=stage,
                   share=prefix.flatten(0, 1) if dedup else None)
        keep = out.scores.shape[1]
        parent = out.rows.view(b, keep) % m
        canvas = out.canvas.view((b, keep) + shape)
        prefix = torch.cat([prefix.flatten(0, 1)[out.rows].view(b, keep, -1), out.choice.view(b, keep, 1)], 2)
        yield BeamStage(stage + 1, prefix, canvas, out.scores, out.losses.view(b, m, k), parent)


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
    follow the codes, greedy after them, and report the losses), without autograd. On the CPU the batch runs
    ``options.cpu_chunk`` items at a time, so a layer's activations stay in the caches. Each
    item's arithmetic is the same, and encode and decode chunk alike.
    """
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
