"""Per-option reconstruction losses and the training objective (paper eqs. 1-3).

These are the paper's losses, mean squared errors in the model's normalised space (the units of
its Figure 4): L(R, X) = mean over the elements (C, H, W) of (R - X)^2; :mod:`vqdraw.core.likelihood`
uses them for its ``mse`` likelihood and gives the others.

:func:`option_losses` is the definition. The stage loop uses :func:`select_option`, which gives
the same numbers (up to float rounding) without forming the proposals R = canvas + d: with the
residual r = X - canvas,

    L(R_j, X) = mean (d_j - r)^2 = (||d_j||^2 - 2 <d_j, r> + ||r||^2) / P

(one squared-norm pass and one batched matrix-vector product over the deltas, no (B, K, C, H, W)
temporaries), and whose backward writes the gradient of every delta in one expression,
2 g (d_j - r) / P, plus the chosen path's gradient, instead of autograd's chain of broadcasts,
index scatters and sums. The term ||r||^2 is the same for every option, so the arg-min does not
suffer from cancellation. Losses, the arg-min and the chosen deltas are always float32, also
when the deltas come from a bf16 autocast region.
"""

from __future__ import annotations

import contextlib

import torch

GROUPED_MAX_ROWS = 16  # grouped losses while groups x largest group <= this x the batch
GRAM_MIN_NUMEL = 1 << 22  # squared norms as a Gram diagonal from this many elements on
GRAM_MAX_OPTIONS = 1024
"""Above this K the (U, K, K) Gram matrix would outweigh the deltas: norms are summed instead."""


def option_losses(proposals: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L(R_j, X) for every option: proposals (B, K, C, H, W), target (B, C, H, W) -> (B, K)."""
    diff = proposals - target.unsqueeze(1)
    return diff.pow(2).flatten(2).mean(dim=2)


class _SelectOption(torch.autograd.Function):
    """(deltas (U, K, P), residual (B, P), grouping | None, codes (B,) | None)
    -> (losses (B, K), choice (B,), chosen deltas (B, P)).

    Without a grouping image b uses deltas[b]. With one, image b uses deltas[group[b]]; the
    grouping is (group, slot, size): image b is member slot[b] of its group and no group has
    more than `size` members, so the residuals can be laid out as (U, size, P) and compared with
    each group's deltas in one batched matrix product.
    """

    @staticmethod
    def forward(ctx, d, r, group, slot, size: int, codes, reuse: bool):
        ctx.set_materialize_grads(False)
        u, k, p = d.shape
        b = r.shape[0]
        rr = (r * r).sum(1, keepdim=True)  # (B, 1)
        sq = _squared_norms(d)  # (U, K)
        if group is None:
            cross = _batched_dot(d, r)  # (B, K)
        else:
            rg = r.new_zeros(u, size, p)
            rg[group, slot] = r
            cross = torch.bmm(rg, d.transpose(1, 2))[group, slot]  # (B, K)
            sq = sq[group]
        losses = ((sq - 2.0 * cross) + rr).div_(p).clamp_min_(0.0)
        choice = losses.argmin(dim=1) if codes is None else codes
        rows = torch.arange(b, device=d.device) if group is None else group
        picked = d[rows, choice]  # (B, P)
        ctx.reuse, ctx.size = reuse, size
        ctx.save_for_backward(d, r, group, slot, choice)
        ctx.mark_non_differentiable(choice)
        return losses, choice, picked

    @staticmethod
    def backward(ctx, g_losses, _g_choice, g_picked):
        d, r, group, slot, choice = ctx.saved_tensors
        u, k, p = d.shape
        b = r.shape[0]
        grad_d = grad_r = None
        if g_losses is not None:
            gs = g_losses.to(d.dtype) * (2.0 / p)  # dL/dd_j = 2 g_j (d_j - r) / P
            grad_r = r * gs.sum(1, keepdim=True)  # dL/dr = -sum_j 2 g_j (d_j - r) / P
            if group is None:
                grad_r -= torch.bmm(gs.unsqueeze(1), d).squeeze(1)
                # reuse: d is needed by nothing else (the refiner's backward needs its inputs,
                # not its output), so its storage becomes the gradient, no new (B, K, P) tensor.
                # A second backward through the same graph then fails loudly (d's version changed).
                grad_d = d.sub_(r.unsqueeze(1)).mul_(gs.unsqueeze(2)) if ctx.reuse else \
                    (d - r.unsqueeze(1)).mul_(gs.unsqueeze(2))
            else:
                gg = gs.new_zeros(u, ctx.size, k)
                gg[group, slot] = gs
                rg = r.new_zeros(u, ctx.size, p)
                rg[group, slot] = r
                grad_d = d * gg.sum(1).unsqueeze(2) - torch.bmm(gg.transpose(1, 2), rg)
                grad_r -= torch.bmm(gg, d)[group, slot]
        if g_picked is not None:
            if grad_d is None:
                grad_d = torch.zeros_like(d)
            rows = torch.arange(b, device=d.device) if group is None else group
            grad_d.index_put_((rows, choice), g_picked.to(grad_d.dtype), accumulate=True)
        return grad_d, grad_r, None, None, None, None, None


def _squared_norms(d: torch.Tensor) -> torch.Tensor:
    """||d[u, j]||^2: (U, K, P) -> (U, K). For large tensors as the diagonal of the per-canvas Gram
    matrix (one read of d, in a matrix product's cache blocking) rather than squaring and summing
    (a full-size temporary written and read back); same value up to float rounding."""
    if d.numel() >= GRAM_MIN_NUMEL and d.shape[1] <= GRAM_MAX_OPTIONS:  # the Gram matrix is (U, K, K)
        return torch.bmm(d, d.transpose(1, 2)).diagonal(dim1=1, dim2=2)
    return (d * d).sum(2)


def _batched_dot(d: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """<d[b, j], r[b]> for (B, K, P) and (B, P), in the orientation that reads d contiguously."""
    if d.stride(1) == 1 and d.stride(2) == d.shape[1]:  # memory (B, P, K): the refiner's NHWC head
        return torch.bmm(r.unsqueeze(1), d.transpose(1, 2)).squeeze(1)
    return torch.bmm(d, r.unsqueeze(2)).squeeze(2)


def group_slots(group: torch.Tensor, groups: int, exact_size: bool = True) -> tuple[torch.Tensor, int]:
    """Each image's slot within its group (0, 1, ... in batch order) and a bound on the group
    sizes: the largest size (read on the host) with ``exact_size``, else the batch size."""
    b = group.shape[0]
    if groups == 1:
        return torch.arange(b, device=group.device), b
    sizes = torch.bincount(group, minlength=groups)
    order = torch.argsort(group, stable=True)
    start = torch.cumsum(sizes, 0) - sizes
    slot = torch.empty_like(group)
    slot[order] = torch.arange(b, device=group.device) - start[group[order]]
    return slot, int(sizes.max()) if exact_size else b


def full_precision(device: torch.device):
    """A region where autocast is off (losses and choices stay float32); nothing to turn off on
    the meta device, where models are sized (:mod:`vqdraw.core.sizing`)."""
    if device.type == "meta":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, enabled=False)


def widen(t: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32; other dtypes unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def select_option(
    deltas: torch.Tensor,
    residual: torch.Tensor,
    codes: torch.Tensor | None = None,
    group: torch.Tensor | None = None,
    reuse_deltas: bool = False,
    exact_size: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One stage's losses, choice and chosen delta, without forming the proposals.

    deltas: (B, K, C, H, W) proposals minus canvas; or (U, K, C, H, W) for U distinct canvases
    with ``group`` (B,) saying which one each image has. residual: (B, C, H, W) = target - canvas.
    codes: (B,) options to follow, or None for the arg-min (Algorithm 1).

    Returns ``losses`` (B, K) = :func:`option_losses` of the proposals (float32), ``choice`` (B,)
    and ``chosen`` (B, C, H, W) = the chosen deltas (float32), through which the gradient of the
    chosen path flows; the losses' gradient reaches every option.

    ``exact_size``: with a grouping, read the largest group's size back to the host (cheap on
    the CPU, a stall on a GPU); False bounds it by the batch instead. None: True on the CPU only.

    ``reuse_deltas=True`` lets the backward pass write the deltas' gradient into the deltas'
    own storage: only for deltas that nothing reads afterwards (the refiner's output), and the
    graph can then be differentiated once only (as with ``retain_graph=False``).
    """
    b = residual.shape[0]
    d = widen(deltas.flatten(2))
    r = widen(residual.reshape(b, -1))
    if group is None and d.shape[0] != b:
        raise ValueError(f"deltas for {d.shape[0]} canvases but {b} residuals and no group index")
    slot, size = None, 0
    if group is not None:
        u = d.shape[0]
        # on a GPU the largest group's size is not read back (no host sync): B bounds it
        if exact_size is None:
            exact_size = d.device.type == "cpu"
        slot, size = group_slots(group, u, exact_size=exact_size)
        if u * size > GROUPED_MAX_ROWS * b:
            # very unequal groups: gathering each image's deltas is cheaper than padding the
            # residuals to the largest group (autograd sums the gathered gradients back)
            d, group, slot = d[group], None, None
    with full_precision(d.device):
        losses, choice, picked = _SelectOption.apply(d, r, group, slot, size, codes, bool(reuse_deltas))
    return losses, choice, picked.view(residual.shape)


def objective(losses: torch.Tensor, codes: torch.Tensor, alpha: float, *, final_coeff: float = 0.0,
              final_only: bool = False) -> dict[str, torch.Tensor]:
    """Eq. 3 from the per-stage losses of one batch.

    losses: (B, N, K) per-option losses at each stage; codes: (B, N) the chosen options.
    Returns named terms: ``chosen`` (eq. 1), ``all`` (eq. 2), ``loss`` = chosen + alpha * all
    (eq. 3), and ``final`` (the chosen loss at the last stage, i.e. the reconstruction MSE).
    Each term is also averaged over the batch.

    The alternatives: ``final_only`` (paper §3.3) replaces ``chosen`` in the loss by ``final``:
    loss = final + alpha * all; ``final_coeff`` f (the author's --final-coeff) adds f * final.
    """
    chosen_per_stage = losses.gather(2, codes.unsqueeze(2)).squeeze(2)  # (B, N)
    chosen = chosen_per_stage.mean()
    all_ = losses.mean()
    final = chosen_per_stage[:, -1].mean()
    loss = (final if final_only else chosen) + alpha * all_
    if final_coeff:
        loss = loss + final_coeff * final
    return {
        "loss": loss,
        "chosen": chosen,
        "all": all_,
        "final": final,
    }


def choice_agreement_nce(losses_a: torch.Tensor, losses_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE between two views' stage choices (the contrastive term, ``TrainConfig.contrastive``).

    losses_a, losses_b: (B, s, K) option losses of the same B items in two views at s stages. Each
    stage's losses, standardised per item, give a choice distribution p = softmax(-z / t); the
    score of pairing item i's first view with item j's second is sum_s log sum_k p_a[i,s,k] p_b[j,s,k]
    (the log-probability that both views choose alike at every stage, as IIC scores co-occurring
    cluster assignments). The loss is the symmetric cross-entropy of those scores against the true
    pairs (SimCLR's NT-Xent over B pairs): low when each view picks its own item out of the batch."""
    def distribution(losses):
        z = (losses - losses.mean(-1, keepdim=True)) / (losses.std(-1, keepdim=True) + 1e-6)
        return torch.softmax(-z / temperature, dim=-1)

    pa, pb = distribution(losses_a.float()), distribution(losses_b.float())
    scores = torch.einsum("isk,jsk->ijs", pa, pb).clamp_min(1e-12).log().sum(-1)  # (B, B)
    target = torch.arange(scores.shape[0], device=scores.device)
    return 0.5 * (torch.nn.functional.cross_entropy(scores, target)
                  + torch.nn.functional.cross_entropy(scores.t(), target))


def shifted_view(x: torch.Tensor, shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each item of ``x`` (B, C, *S) translated by a random whole number of elements in
    [-shift, shift] along every spatial axis, zero-filled (the contrastive term's second view)."""
    if shift <= 0:
        return x
    out = x
    for axis in range(2, x.dim()):
        offsets = torch.randint(-shift, shift + 1, (x.shape[0],), generator=generator).tolist()
        out = torch.stack([_shift(item, off, axis - 1) for item, off in zip(out, offsets)])
    return out


def _shift(item: torch.Tensor, offset: int, dim: int) -> torch.Tensor:
    if offset == 0:
        return item
    rolled = torch.roll(item, offset, dims=dim)
    index = torch.arange(item.shape[dim], device=item.device)
    keep = (index >= offset) if offset > 0 else (index < item.shape[dim] + offset)
    shape = [1] * item.dim()
    shape[dim] = -1
    return rolled * keep.view(shape).to(item.dtype)


def code_usage(codes: torch.Tensor, options: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy (nats) of the option histogram over a batch of codes (all stages) and options used.

    This is the paper's per-mini-batch entropy (max ln K). One bincount, no Python loop over K.
    """
    counts = torch.bincount(codes.reshape(-1), minlength=options).float()
    probs = counts / counts.sum().clamp_min(1)
    nz = probs[probs > 0]
    return -(nz * nz.log()).sum(), (counts > 0).sum()
