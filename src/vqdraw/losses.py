"""Per-option reconstruction losses and the training objective (paper eqs. 1-3).

All losses are mean squared errors in the model's normalised space (the units of the paper's
Figure 4): L(R, X) = mean over (C, H, W) of (R - X)^2.

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

import torch

GROUPED_MAX = 32  # select_option compares images with all groups' options up to this many groups


def option_losses(proposals: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L(R_j, X) for every option: proposals (B, K, C, H, W), target (B, C, H, W) -> (B, K)."""
    diff = proposals - target.unsqueeze(1)
    return diff.pow(2).flatten(2).mean(dim=2)


class _SelectOption(torch.autograd.Function):
    """(deltas (U, K, P), residual (B, P), group (B,) | None, codes (B,) | None)
    -> (losses (B, K), choice (B,), chosen deltas (B, P)); image b uses deltas[group[b]]
    (deltas[b] when group is None)."""

    @staticmethod
    def forward(ctx, d, r, group, codes, reuse: bool):
        ctx.set_materialize_grads(False)
        u, k, p = d.shape
        b = r.shape[0]
        rr = (r * r).sum(1, keepdim=True)  # (B, 1)
        sq = (d * d).sum(2)  # (U, K)
        if group is None:
            cross = _batched_dot(d, r)  # (B, K)
        elif u == 1:
            cross = r @ d[0].t()  # one shared set of deltas: a plain matrix product
            sq = sq.expand(b, k)
        else:
            cross = _grouped_cross(d, r, group)
            sq = sq[group]
        losses = ((sq - 2.0 * cross) + rr).div_(p).clamp_min_(0.0)
        choice = losses.argmin(dim=1) if codes is None else codes
        rows = torch.arange(b, device=d.device) if group is None else group
        picked = d[rows, choice]  # (B, P)
        ctx.reuse = reuse
        ctx.save_for_backward(d, r, group, choice)
        ctx.mark_non_differentiable(choice)
        return losses, choice, picked

    @staticmethod
    def backward(ctx, g_losses, _g_choice, g_picked):
        d, r, group, choice = ctx.saved_tensors
        u, k, p = d.shape
        b = r.shape[0]
        grad_d = grad_r = None
        if g_losses is not None:
            gs = g_losses.to(d.dtype) * (2.0 / p)  # dL/dd_j = 2 g_j (d_j - r) / P
            if group is None:
                grad_r = r * gs.sum(1, keepdim=True) - torch.bmm(gs.unsqueeze(1), d).squeeze(1)
                # reuse: d is needed by nothing else (the refiner's backward needs its inputs,
                # not its output), so its storage becomes the gradient, no new (B, K, P) tensor.
                # A second backward through the same graph then fails loudly (d's version changed).
                grad_d = d.sub_(r.unsqueeze(1)).mul_(gs.unsqueeze(2)) if ctx.reuse else \
                    (d - r.unsqueeze(1)).mul_(gs.unsqueeze(2))
            else:
                s = gs.new_zeros(b, u, k)
                s[torch.arange(b, device=d.device), group] = gs  # (B, U, K)
                grad_d = d * s.sum(0).unsqueeze(2) - torch.einsum("buk,bp->ukp", s, r)
                grad_r = r * gs.sum(1, keepdim=True) - torch.einsum("buk,ukp->bp", s, d)
        if g_picked is not None:
            if grad_d is None:
                grad_d = torch.zeros_like(d)
            rows = torch.arange(b, device=d.device) if group is None else group
            grad_d.index_put_((rows, choice), g_picked.to(grad_d.dtype), accumulate=True)
        return grad_d, grad_r, None, None, None


def _batched_dot(d: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """<d[b, j], r[b]> for (B, K, P) and (B, P), in the orientation that reads d contiguously."""
    if d.stride(1) == 1 and d.stride(2) == d.shape[1]:  # memory (B, P, K): the refiner's NHWC head
        return torch.bmm(r.unsqueeze(1), d.transpose(1, 2)).squeeze(1)
    return torch.bmm(d, r.unsqueeze(2)).squeeze(2)


def _grouped_cross(d: torch.Tensor, r: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """<d[group[b], j], r[b]> for every image b and option j: (B, K)."""
    u, k, p = d.shape
    # all groups against all images in one product (U*K x P x B), then pick each image's group
    allpairs = torch.matmul(d.reshape(u * k, p), r.t()).view(u, k, -1)  # (U, K, B)
    return allpairs[group, :, torch.arange(r.shape[0], device=r.device)]  # (B, K)


def widen(t: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32; other dtypes unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def select_option(
    deltas: torch.Tensor,
    residual: torch.Tensor,
    codes: torch.Tensor | None = None,
    group: torch.Tensor | None = None,
    reuse_deltas: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One stage's losses, choice and chosen delta, without forming the proposals.

    deltas: (B, K, C, H, W) proposals minus canvas; or (U, K, C, H, W) for U distinct canvases
    with ``group`` (B,) saying which one each image has. residual: (B, C, H, W) = target - canvas.
    codes: (B,) options to follow, or None for the arg-min (Algorithm 1).

    Returns ``losses`` (B, K) = :func:`option_losses` of the proposals (float32), ``choice`` (B,)
    and ``chosen`` (B, C, H, W) = the chosen deltas (float32), through which the gradient of the
    chosen path flows; the losses' gradient reaches every option.

    ``reuse_deltas=True`` lets the backward pass write the deltas' gradient into the deltas'
    own storage; only for deltas that nothing else reads afterwards (the refiner's output).
    """
    b = residual.shape[0]
    flat = deltas.flatten(2)
    d = widen(flat)
    reuse_deltas = reuse_deltas or d is not flat or flat.data_ptr() != deltas.data_ptr()  # a copy
    r = widen(residual.reshape(b, -1))
    if group is None and d.shape[0] != b:
        raise ValueError(f"deltas for {d.shape[0]} canvases but {b} residuals and no group index")
    if group is not None and d.shape[0] > GROUPED_MAX:
        # many groups: comparing every image with every group's options would cost more than
        # gathering each image's deltas (autograd sums the gathered gradients back)
        d, group, reuse_deltas = d[group], None, True
    with torch.autocast(device_type=d.device.type, enabled=False):
        losses, choice, picked = _SelectOption.apply(d, r, group, codes, bool(reuse_deltas))
    return losses, choice, picked.view(residual.shape)


def objective(losses: torch.Tensor, codes: torch.Tensor, alpha: float) -> dict[str, torch.Tensor]:
    """Eq. 3 from the per-stage losses of one batch.

    losses: (B, N, K) per-option losses at each stage; codes: (B, N) the chosen options.
    Returns named terms: ``chosen`` (eq. 1), ``all`` (eq. 2), ``loss`` = chosen + alpha * all
    (eq. 3), and ``final`` (the chosen loss at the last stage, i.e. the reconstruction MSE).
    Each term is also averaged over the batch.
    """
    chosen_per_stage = losses.gather(2, codes.unsqueeze(2)).squeeze(2)  # (B, N)
    chosen = chosen_per_stage.mean()
    all_ = losses.mean()
    return {
        "loss": chosen + alpha * all_,
        "chosen": chosen,
        "all": all_,
        "final": chosen_per_stage[:, -1].mean(),
    }


def code_usage(codes: torch.Tensor, options: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy (nats) of the option histogram over a batch of codes (all stages) and options used.

    This is the paper's per-mini-batch entropy (max ln K). One bincount, no Python loop over K.
    """
    counts = torch.bincount(codes.reshape(-1), minlength=options).float()
    probs = counts / counts.sum().clamp_min(1)
    nz = probs[probs > 0]
    return -(nz * nz.log()).sum(), (counts > 0).sum()
