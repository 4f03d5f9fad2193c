"""Per-option reconstruction losses and the training objective (paper eqs. 1-3).

All losses are mean squared errors in the model's normalised space (the units of the paper's
Figure 4): L(R, X) = mean over (C, H, W) of (R - X)^2.
"""

from __future__ import annotations

import torch


def option_losses(proposals: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L(R_j, X) for every option: proposals (B, K, C, H, W), target (B, C, H, W) -> (B, K)."""
    diff = proposals - target.unsqueeze(1)
    return diff.pow(2).flatten(2).mean(dim=2)


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
