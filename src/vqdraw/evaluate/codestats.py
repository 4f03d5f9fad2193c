"""Code statistics over a whole dataset split: how each stage uses its K options.

Training logs the paper's per-mini-batch entropy of all options pooled over stages
(:func:`vqdraw.core.losses.code_usage`). That hides stages that use few options and options that are
never chosen. Here the codes of every image of a split are counted per stage:

    counts[i, j]   = number of images whose stage-i code is option j          (N, K)
    p[i, j]        = counts[i, j] / images
    entropy[i]     = -sum_j p[i, j] log2 p[i, j]     bits, at most log2 K
    perplexity[i]  = 2 ** entropy[i]                 "effective number of options" of stage i
    unused[i]      = [j : counts[i, j] == 0]         options stage i never chose

The pooled histogram (all stages together, the quantity of the training logs) is reported too.
Works for any model with ``encode(x) -> (B, N)`` and ``options``: VQ-DRAW stages, or the VQ-VAE
baseline's latent positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class CodeStats:
    counts: np.ndarray
    """(N, K) int64: how many images chose option j at stage i."""

    @property
    def images(self) -> int:
        return int(self.counts[0].sum()) if len(self.counts) else 0

    @property
    def stages(self) -> int:
        return self.counts.shape[0]

    @property
    def options(self) -> int:
        return self.counts.shape[1]

    @property
    def probabilities(self) -> np.ndarray:
        return self.counts / max(1, self.images)

    @property
    def entropy_bits(self) -> np.ndarray:
        """(N,) entropy of each stage's option histogram, in bits."""
        return np.array([_entropy_bits(row) for row in self.counts])

    @property
    def perplexity(self) -> np.ndarray:
        return 2.0 ** self.entropy_bits

    @property
    def unused(self) -> list[list[int]]:
        return [np.flatnonzero(row == 0).tolist() for row in self.counts]

    @property
    def pooled_counts(self) -> np.ndarray:
        return self.counts.sum(0)

    def to_dict(self) -> dict:
        ent = self.entropy_bits
        pooled = self.pooled_counts
        return {
            "images": self.images,
            "stages": self.stages,
            "options": self.options,
            "max_entropy_bits": math.log2(self.options),
            "entropy_bits": ent.round(6).tolist(),
            "perplexity": self.perplexity.round(4).tolist(),
            "mean_entropy_bits": float(ent.mean()) if len(ent) else 0.0,
            "used_per_stage": [int((row > 0).sum()) for row in self.counts],
            "unused": self.unused,
            "unused_total": int(sum(len(u) for u in self.unused)),
            "never_used_anywhere": np.flatnonzero(pooled == 0).tolist(),
            "pooled_entropy_bits": _entropy_bits(pooled),
            "pooled_entropy_nats": _entropy_bits(pooled) * math.log(2),
            "counts": self.counts.tolist(),
        }


def _entropy_bits(counts: np.ndarray) -> float:
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0: no "-0.0" in the JSON


def code_statistics(codes, options: int) -> CodeStats:
    """Per-stage option counts of integer codes (M, N) with values in [0, options)."""
    c = torch.as_tensor(codes).long()
    if c.dim() != 2:
        raise ValueError(f"codes must have shape (M, N); got {tuple(c.shape)}")
    if c.numel() and (c.min() < 0 or c.max() >= options):
        raise ValueError(f"code values must be in [0, {options})")
    m, n = c.shape
    # One bincount over (stage, option) pairs: index = stage * K + option.
    flat = (torch.arange(n).unsqueeze(0) * options + c).reshape(-1)
    counts = torch.bincount(flat, minlength=n * options).view(n, options)
    return CodeStats(counts.numpy().astype(np.int64))


def distinct_codes(codes) -> int:
    """Number of different full codes among the rows of `codes` (M, N)."""
    c = torch.as_tensor(codes)
    return int(torch.unique(c, dim=0).shape[0]) if c.numel() else 0


@torch.no_grad()
def encode_images(model, image_set, batch: int = 250, limit: int | None = None) -> torch.Tensor:
    """Codes (M, N) int64 on the CPU of the first `limit` (default all) images of a Dataset."""
    n = len(image_set) if limit is None else min(limit, len(image_set))
    out = []
    for start in range(0, n, batch):
        x = image_set.batch(range(start, min(n, start + batch)), model.device)
        out.append(model.encode(x).cpu())
    return torch.cat(out) if out else torch.zeros(0, model.stages, dtype=torch.long)


def save_heatmap(stats: CodeStats, path: str | Path, title: str = "", stage_label: str = "stage") -> Path:
    """Heat map stage x option of usage counts (log colour scale); options never used are red.
    A side panel shows each stage's entropy against the maximum log2 K."""
    import matplotlib
    from matplotlib.colors import LogNorm

    from .plots import figure, save_figure

    n, k = stats.counts.shape
    width = min(14.0, 3.0 + 0.12 * k)
    height = max(3.0, min(9.0, 1.6 + 0.15 * n))
    fig = figure(width + 2.0, height, dpi=100)
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [width, 2.0]}, sharey=True)
    masked = np.ma.masked_equal(stats.counts, 0)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="red")
    vmax = max(1, int(stats.counts.max()))
    im = ax.imshow(masked, aspect="auto", cmap=cmap, norm=LogNorm(vmin=1, vmax=max(2, vmax)),
                   interpolation="nearest")
    ax.set_xlabel(f"option (red: never used, {stats.to_dict()['unused_total']} in all)")
    ax.set_ylabel(stage_label)
    ax.set_yticks(range(n))
    ax.set_yticklabels([str(i + 1) if n <= 20 or i % 5 == 4 or i == 0 else "" for i in range(n)], fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.01, label=f"images (of {stats.images})")
    ent = stats.entropy_bits
    ax2.barh(range(n), ent, color="tab:orange")
    ax2.axvline(math.log2(k), color="black", lw=1, ls="--")
    ax2.set_xlim(0, math.log2(k) * 1.05)
    ax2.set_xlabel("entropy (bits)")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
