"""The straightforward computation of Algorithms 1-2 and eq. 3: the yardstick, not the fast path.

Written the obvious way, as a reader of the paper would: the refiner module by module (conv ->
stage mask -> ReLU [-> GroupNorm], head * output_scale), every stage forming the (B, K, C, H, W)
proposals, their per-option losses and the arg-min, with autograd doing the rest. The library's
own path (:func:`vqdraw.core.stageloop.run`) computes the same numbers faster; the tests check the two
agree (tests/test_speed_equivalence.py) and ``benchmarks/bench_train.py --reference`` times this
one as the "before" figure on the same machine, in the same hour.
"""

from __future__ import annotations

import torch

from .layers import ConvUnit
from .losses import objective


def reference_deltas(refiner, canvas: torch.Tensor, stage: int) -> torch.Tensor:
    """One :class:`~vqdraw.core.refiner.Refiner` at `stage`, module by module: (B, K, C, H, W)."""
    stage = stage if refiner.conditioned else 0  # no stage conditioning: one mask row, one head
    h = canvas
    for unit in refiner.units:
        if isinstance(unit, ConvUnit):
            h = unit.conv(h)
            if unit.mask is not None:
                h = unit.mask(h, stage)
            if unit.activate:
                h = unit.norm(torch.relu(h))
        else:  # a residual block
            x = h
            for norm, conv, mask in zip(unit.norms, unit.convs, unit.masks):
                h = mask(conv(norm(torch.relu(h))), stage)
            h = x + h
    head = refiner.heads[stage if len(refiner.heads) > 1 else 0]
    out = head(h) * refiner.output_scale
    return out.unflatten(1, (refiner.options, refiner.channels))


def reference_proposals(model, canvas: torch.Tensor, stage: int) -> torch.Tensor:
    """canvas + deltas (+ the learned first-stage candidates at stage 0): (B, K, C, H, W); the
    deltas alone without residual outputs."""
    seg = model.refiner
    p = reference_deltas(seg.segments[stage // seg.segment], canvas, stage % seg.segment)
    if seg.residual:
        p = canvas.unsqueeze(1) + p
    return p + seg.first_bias if stage == 0 else p


def reference_run(model, target: torch.Tensor | None, codes: torch.Tensor | None = None):
    """Algorithm 1 on normalised targets, or Algorithm 2 following `codes` (then `target` may be
    None: no losses), stage by stage: (codes (B, N), final canvas (B, C, H, W), losses (B, N, K)
    or None)."""
    ref = target if target is not None else codes
    canvas = torch.zeros((len(ref), *model.refiner.first_bias.shape[1:]), device=ref.device)  # canvas shape
    rows = torch.arange(len(ref), device=ref.device)
    chosen, losses = [], []
    for i in range(codes.shape[1] if codes is not None else model.stages):
        p = reference_proposals(model, canvas, i)
        stage_losses = model.likelihood.option_losses(p, target) if target is not None else None
        c = stage_losses.argmin(1) if codes is None else codes[:, i]
        canvas = p[rows, c]
        chosen.append(c)
        losses.append(stage_losses)
    return torch.stack(chosen, 1), canvas, None if target is None else torch.stack(losses, 1)


def reference_loss(model, x: torch.Tensor, alpha: float) -> dict:
    """Eq. 3 for images `x` in [0, 1] through :func:`reference_run` (same terms as ``model.loss``)."""
    codes, _, losses = reference_run(model, model.target(x))
    terms = objective(losses, codes, alpha)
    terms["codes"] = codes
    return terms
