"""The likelihood: what the canvas holds, how a proposal is scored, how the canvas becomes data.

    data x in [0, 1] --target(x)--> what proposals are compared with
    proposals R (B, K, C, ...) --option_losses(R, target)--> (B, K)   the encoder keeps the arg-min
    canvas (B, C, ...) --to_data(canvas)--> data again

* ``mse``: the paper's. The canvas holds values in the normalised space (per-channel mean and
  std from the config) and the loss is the squared error there, averaged over the elements: a
  Gaussian of fixed variance, up to constants. Its stage loop takes the fast path of
  :func:`vqdraw.core.losses.select_option` (norms and dot products, float32 arg-min under bf16).
* ``bernoulli``: the canvas holds logits; the loss is the binary cross-entropy (nats per
  element) of the data under sigmoid(logits); data are 0/1 (or probabilities) and the canvas
  becomes data as sigmoid(canvas). For binary images and voxels.
* ``gaussian``: the canvas holds a mean and a log-std per element (2C channels, in the normalised
  space of ``mse``); the loss is the Gaussian negative log-density of the data in [0, 1] (nats per
  element). The std has a soft floor of one 8-bit level, 1/255: 8-bit data are discrete, and a
  density on them is unbounded as the std shrinks to 0.
* ``discretized-logistic``: PixelCNN++'s per-element likelihood with one mixture component: the
  canvas holds a location and a log-scale (2C channels); the loss is minus the log-probability
  of the data's 8-bit bin, with the two outer bins open (0 covers (-inf, 0.5/255], 1 covers
  [1 - 0.5/255, inf)).
* ``categorical``: V classes per element (``ModelConfig.categories``; 256: 8-bit pixels, the
  paper's "discretized softmax"; or text characters), the data's value x in [0, 1] being class
  round(x (V - 1)). The head is factorised: the canvas holds E = min(V, 16) features per element
  and the logits are a learned linear map of them, W (V, E) @ features (a map is linear, so logits
  are as additive over stages as the canvas). A head emitting K*C*V channels would make the
  refiner's own output B*K*C*V*S floats (MNIST, B=32: 1.6 GB per stage); with E=16 it is 1/16th
  of that. The per-option loss still needs B*K*C*S*V logits: they are formed a few options at a
  time (at most ``LOGITS_BUDGET`` floats, formed again in backward, none kept), never all at once.

:meth:`Likelihood.discrete_log_prob` gives log p(x | canvas) in nats per item for data on the
likelihood's grid (``levels``: 256 for 8-bit data, 2 for bernoulli, V for categorical): the
continuous likelihoods are integrated over the 8-bit bins as above (mse as a Gaussian of a
given fixed std), so the figures compare with published bits per dimension (:mod:`vqdraw.evaluate.nll`).
A likelihood with no such rule for the data raises :class:`~vqdraw.errors.InputError`.

Any per-element negative log-likelihood fits the generic :meth:`Likelihood.select`: a subclass
gives :meth:`Likelihood.element_losses`, :meth:`target` and :meth:`to_data`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from ..errors import ConfigError, InputError
from .losses import option_losses as squared_error_losses
from .losses import full_precision, select_option, widen


class Likelihood(nn.Module):
    """Scores proposals against a target; the base of every likelihood (see the module docstring)."""

    name = ""
    levels = 256
    """Values per element that :meth:`discrete_log_prob` scores (data on the grid k / (levels - 1))."""

    def canvas_channels(self, data_channels: int) -> int:
        """Channels of the canvas (and of each delta) for data with `data_channels` channels."""
        return data_channels

    def discrete_log_prob(self, canvas: torch.Tensor, x: torch.Tensor, **options) -> torch.Tensor:
        """log p(x | canvas) in nats, summed over each item's elements: (B,) float64. Data x
        (B, C, ...) must lie on the grid of :attr:`levels` values in [0, 1]."""
        raise ConfigError(f"the {self.name} likelihood has no discretisation rule")

    def check_levels(self, x: torch.Tensor) -> None:
        """InputError unless every value of x is k / (levels - 1) for an integer k."""
        if not on_grid(x, self.levels):
            raise InputError(f"the {self.name} likelihood scores data on {self.levels} levels "
                             f"(k/{self.levels - 1}); these data have other values")

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """Data (B, C, ...) in [0, 1] -> the target the canvas is compared with."""
        raise NotImplementedError

    def to_data(self, canvas: torch.Tensor) -> torch.Tensor:
        """A canvas (B, C, ...) -> data in [0, 1]."""
        raise NotImplementedError

    def element_losses(self, proposals: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-element loss of proposals (B, K, C, ...) against target (B, C, ...): same shape."""
        raise NotImplementedError

    def option_losses(self, proposals: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """L(R_j, X) for every option, averaged over the elements: (B, K, C, ...) -> (B, K)."""
        return self.element_losses(proposals, target).flatten(2).mean(dim=2)

    squared_error = False
    """Whether the loss is the squared error between canvas and target: the stage loop then
    scores options without forming proposals (:func:`vqdraw.core.losses.select_option`)."""

    def select(self, deltas: torch.Tensor, canvas: torch.Tensor, target: torch.Tensor,
               codes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One stage: (losses (B, K) float32, choice (B,), chosen delta (B, C, ...) float32).

        deltas: (B, K, C, ...); canvas and target: (B, C, ...). ``codes`` (B,): options to
        follow, or None for the arg-min (Algorithm 1). The generic path forms the proposals.
        """
        d = widen(deltas)
        with full_precision(d.device):
            losses = self.option_losses(widen(canvas).unsqueeze(1) + d, widen(target))
        choice = losses.argmin(dim=1) if codes is None else codes
        chosen = d[torch.arange(d.shape[0], device=d.device), choice]
        return losses, choice, chosen


class MSE(Likelihood):
    """Squared error in the normalised space (the paper's loss); the canvas holds normalised values."""

    name = "mse"

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], rank: int):
        super().__init__()
        shape = (1, len(mean)) + (1,) * rank
        self.register_buffer("mean", torch.tensor(mean).view(shape), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(shape), persistent=False)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def to_data(self, canvas: torch.Tensor) -> torch.Tensor:
        return (canvas * self.std + self.mean).clamp(0.0, 1.0)

    def element_losses(self, proposals: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (proposals - target.unsqueeze(1)).pow(2)

    def option_losses(self, proposals: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return squared_error_losses(proposals, target)

    squared_error = True

    def select(self, deltas, canvas, target, codes=None):
        # the fast path: no proposals tensor, float32 losses and arg-min (see vqdraw.core.losses)
        return select_option(deltas, target - canvas, codes)

    def discrete_log_prob(self, canvas, x, *, sigma: float | None = None):
        """The reconstruction as the mean of a Gaussian of fixed std `sigma` (data units, given by
        the caller: the paper's loss fixes no variance), integrated over the 8-bit bins."""
        if sigma is None or not sigma > 0:
            raise InputError("the mse likelihood needs a positive fixed std (sigma) to give a log-likelihood")
        self.check_levels(x)
        x = x.double()
        mean = self.to_data(canvas).double()
        log_s = torch.full_like(mean, math.log(sigma))
        return _log_bin_prob(torch.special.log_ndtr, x, mean, log_s, 0.5 / 255, *_edges(x)).flatten(1).sum(1)


class Bernoulli(Likelihood):
    """Independent Bernoulli elements; the canvas holds logits."""

    name = "bernoulli"
    levels = 2

    def target(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def to_data(self, canvas: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(canvas)

    def element_losses(self, proposals: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(
            proposals, target.unsqueeze(1).expand_as(proposals), reduction="none")

    def check_levels(self, x):
        if not on_grid(x, 2):
            raise InputError("the bernoulli likelihood has no discretisation rule for data that are not binary "
                             "(0/1); binarise them (e.g. --binarize threshold)")

    def discrete_log_prob(self, canvas, x, **options):
        self.check_levels(x)
        return -F.binary_cross_entropy_with_logits(canvas.double(), x.double(), reduction="none").flatten(1).sum(1)


class _LocationScale(Likelihood):
    """A location and a log-scale per element (2C canvas channels) in the normalised space of
    ``mse``; the log-scale has a soft floor, ``floor + softplus(raw - floor)``."""

    def __init__(self, mean, std, rank: int, floor_bins: float):
        super().__init__()
        shape = (1, len(mean)) + (1,) * rank
        mean = torch.tensor(mean, dtype=torch.float64).view(shape)
        std = torch.tensor(std, dtype=torch.float64).view(shape)
        self.rank = rank
        self.register_buffer("mean", mean.float(), persistent=False)
        self.register_buffer("std", std.float(), persistent=False)
        self.register_buffer("half_bin", (0.5 / 255 / std).float(), persistent=False)  # half a bin, normalised
        self.register_buffer("floor", torch.log(floor_bins / 255 / std).float(), persistent=False)
        self.register_buffer("low", ((0.5 / 255 - mean) / std).float(), persistent=False)  # below: the 0 bin
        self.register_buffer("high", ((1 - 0.5 / 255 - mean) / std).float(), persistent=False)

    def canvas_channels(self, data_channels: int) -> int:
        return 2 * data_channels

    def target(self, x):
        return (x - self.mean) / self.std

    def split(self, canvas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A canvas (..., 2C, *S) -> location and log-scale (..., C, *S), normalised units."""
        loc, raw = canvas.chunk(2, dim=-(self.rank + 1))
        return loc, self.floor + F.softplus(raw - self.floor)

    def to_data(self, canvas):
        return (self.split(canvas)[0] * self.std + self.mean).clamp(0.0, 1.0)

    def bin_log_prob(self, log_cdf, canvas, xn):
        """log P(x's 8-bit bin) per element; canvas (..., 2C, *S), normalised data xn (..., C, *S)."""
        loc, log_s = self.split(canvas)
        return _log_bin_prob(log_cdf, xn, loc, log_s, self.half_bin, xn < self.low, xn > self.high)

    def discrete_log_prob(self, canvas, x, **options):
        self.check_levels(x)
        with full_precision(canvas.device):
            xn = self.target(x.double())
            loc, log_s = self.split(canvas.double())
            half, low, high = self.half_bin.double(), self.low.double(), self.high.double()
            return _log_bin_prob(self.log_cdf, xn, loc, log_s, half, xn < low, xn > high).flatten(1).sum(1)


class Gaussian(_LocationScale):
    """A mean and a log-std per element; loss: Gaussian negative log-density of x in [0, 1]."""

    name = "gaussian"
    log_cdf = staticmethod(torch.special.log_ndtr)

    def __init__(self, mean, std, rank: int):
        super().__init__(mean, std, rank, floor_bins=1.0)  # std >= ~1/255 in data units

    def element_losses(self, proposals, target):
        loc, log_s = self.split(proposals)
        z = (target.unsqueeze(1) - loc) * torch.exp(-log_s)
        # density of the normalised value, plus log std: the density of x itself
        return 0.5 * z * z + log_s + (0.5 * math.log(2 * math.pi)) + torch.log(self.std)


class DiscretizedLogistic(_LocationScale):
    """PixelCNN++'s discretised logistic (one component); loss: -log P(x's 8-bit bin)."""

    name = "discretized-logistic"
    log_cdf = staticmethod(F.logsigmoid)

    def __init__(self, mean, std, rank: int):
        super().__init__(mean, std, rank, floor_bins=1.0 / 16)

    def element_losses(self, proposals, target):
        return -self.bin_log_prob(F.logsigmoid, proposals, target.unsqueeze(1))


LOGITS_BUDGET = 1 << 24
"""The categorical likelihood forms at most this many logits at a time (64 MB of float32)."""


class Categorical(Likelihood):
    """V classes per element through a factorised head (see the module docstring)."""

    name = "categorical"

    def __init__(self, categories: int, rank: int):
        super().__init__()
        self.levels = categories
        self.embed = min(categories, 16)
        self.rank = rank
        self.proj = nn.Parameter(torch.randn(categories, self.embed) / math.sqrt(self.embed))

    def canvas_channels(self, data_channels: int) -> int:
        return data_channels * self.embed

    def target(self, x):
        return torch.round(x * (self.levels - 1))  # class indices, as floats

    def logits(self, canvas: torch.Tensor) -> torch.Tensor:
        """Canvas (..., C*E, *S) -> logits (..., V, C, *S)."""
        c_dim = canvas.dim() - self.rank - 1
        # positive dims throughout: an ONNX Transpose takes no negative axes (vqdraw.compress.export)
        f = canvas.unflatten(c_dim, (-1, self.embed)).movedim(c_dim + 1, canvas.dim())  # (..., C, *S, E)
        return (f @ self.proj.to(f.dtype).t()).movedim(canvas.dim(), c_dim)  # (..., V, C, *S)

    def _nll(self, canvas: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Cross-entropy per element: canvas (N, C*E, *S), classes (N, C, *S) -> (N, C, *S).

        logsumexp over the classes of the logits W f minus the true class's logit, computed by
        :class:`_CrossEntropy`, which keeps no logits for the backward pass (it recomputes them
        once there). The same numbers and gradients as ``F.cross_entropy(self.logits(canvas))``
        (tested)."""
        c_dim = canvas.dim() - self.rank - 1
        f = canvas.unflatten(c_dim, (-1, self.embed)).movedim(c_dim + 1, -1)  # (N, C, *S, E)
        out = _CrossEntropy.apply(f.reshape(-1, self.embed), self.proj.to(f.dtype), classes.reshape(-1).long())
        return out.view(f.shape[:-1])

    def element_losses(self, proposals, target):
        b, k = proposals.shape[:2]
        per_option = b * proposals[0, 0].numel() // self.embed * self.levels
        step = max(1, LOGITS_BUDGET // max(1, per_option))
        out = []
        for j in range(0, k, step):
            p = proposals[:, j: j + step]
            t = target.unsqueeze(1).expand(-1, p.shape[1], *target.shape[1:]).flatten(0, 1)
            losses = self._nll(p.flatten(0, 1), t)  # no logits kept for backward: see _CrossEntropy
            out.append(losses.unflatten(0, (b, -1)))
        return torch.cat(out, 1)

    def softmax_input(self, canvas: torch.Tensor) -> torch.Tensor:
        """softmax(logits) * sqrt(V), (B, C*V, *S): what the author's text refiner reads."""
        c_dim = canvas.dim() - self.rank - 1
        p = torch.softmax(self.logits(canvas).float(), dim=c_dim) * math.sqrt(self.levels)
        return p.movedim(c_dim, c_dim + 1).flatten(c_dim, c_dim + 1).to(canvas.dtype)  # (B, C*V, *S)

    def _chunks(self, canvas: torch.Tensor):
        per_item = max(1, math.prod(canvas.shape[1:]) // self.embed * self.levels)
        step = max(1, LOGITS_BUDGET // per_item)
        return range(0, canvas.shape[0], step), step

    def to_data(self, canvas):
        """The most likely class of each element, as k / (V - 1)."""
        rows, step = self._chunks(canvas)
        with torch.no_grad():  # the arg-max has no gradient
            out = [self.logits(canvas[i: i + step]).argmax(dim=canvas.dim() - self.rank - 1) for i in rows]
        if not out:
            return canvas.new_zeros((0, canvas.shape[1] // self.embed, *canvas.shape[2:]))
        return torch.cat(out).float() / (self.levels - 1)

    def discrete_log_prob(self, canvas, x, **options):
        self.check_levels(x)
        classes = self.target(x)
        rows, step = self._chunks(canvas)
        with torch.no_grad(), full_precision(canvas.device):
            out = [-self._nll(canvas[i: i + step].double(), classes[i: i + step]).flatten(1).sum(1) for i in rows]
        return torch.cat(out) if out else canvas.new_zeros(0, dtype=torch.float64)


class _CrossEntropy(torch.autograd.Function):
    """Cross-entropy of classes under logits f W^T: f (M, E), W (V, E), classes (M,) -> (M,).

    Forward forms the (M, V) logits once, exponentiates them in place and keeps only f, W, the
    classes and the log-sum-exp; backward forms them once more for the softmax p and returns
    g (p - onehot) W and (g (p - onehot))^T f. Autograd through ``logsumexp(f @ W.T)`` keeps the
    (M, V) logits, and checkpointing them to save that memory (what this replaced) forms them three
    times; this forms them twice and keeps none.
    """

    @staticmethod
    def forward(ctx, f, w, classes):
        logits = f @ w.t()
        top = logits.amax(dim=1, keepdim=True)
        lse = logits.sub_(top).exp_().sum(dim=1).log_().add_(top.squeeze(1))
        picked = (f * w[classes]).sum(dim=1)
        ctx.save_for_backward(f, w, classes, lse)
        return lse - picked

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        f, w, classes, lse = ctx.saved_tensors
        g = (f @ w.t()).sub_(lse.unsqueeze(1)).exp_()  # the softmax p, (M, V)
        g.mul_(grad.unsqueeze(1))
        g[torch.arange(len(classes), device=g.device), classes] -= grad  # grad * (p - onehot)
        grad_f = g @ w if ctx.needs_input_grad[0] else None
        grad_w = g.t() @ f if ctx.needs_input_grad[1] else None
        return grad_f, grad_w, None


def on_grid(x: torch.Tensor, levels: int) -> bool:
    """Whether every value of x is k / (levels - 1) for an integer k (up to float rounding)."""
    y = x.double() * (levels - 1)
    return bool(((y - y.round()).abs() <= 1e-4).all())


def _edges(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Elements in the open outer bins of 8-bit data in [0, 1]."""
    return x < 0.5 / 255, x > 1 - 0.5 / 255


def _log_bin_prob(log_cdf, x, loc, log_scale, half, bottom, top) -> torch.Tensor:
    """log P(x - half < X < x + half) for X = loc + scale * Z, Z with log-CDF `log_cdf` (symmetric);
    the bin is open below where `bottom`, above where `top`. Stable in both tails: a bin right of
    the location is mirrored to the left, where log-CDFs are accurate."""
    inv = torch.exp(-log_scale)
    lo = (x - half - loc) * inv
    hi = (x + half - loc) * inv
    flip = (lo + hi) > 0
    a, b = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)
    la, lb = log_cdf(a), log_cdf(b)
    inner = lb + torch.log((-torch.expm1((la - lb).clamp_max(-1e-30))).clamp_min(torch.finfo(la.dtype).tiny))
    return torch.where(bottom, log_cdf(hi), torch.where(top, log_cdf(-lo), inner))


def make_likelihood(config: ModelConfig) -> Likelihood:
    """The likelihood named by ``config.likelihood``."""
    if config.likelihood == "bernoulli":
        return Bernoulli()
    if config.likelihood == "gaussian":
        return Gaussian(config.mean, config.std, config.rank)
    if config.likelihood == "discretized-logistic":
        return DiscretizedLogistic(config.mean, config.std, config.rank)
    if config.likelihood == "categorical":
        return Categorical(config.categories, config.rank)
    return MSE(config.mean, config.std, config.rank)
