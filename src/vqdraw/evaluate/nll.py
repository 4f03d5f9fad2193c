"""Log-likelihood bounds of a VQ-DRAW model for every code prefix (the paper's §4, made a figure).

A VQ-DRAW model is a latent-variable model: a code c of n stages is uniform over K^n values and
the data x have the likelihood p(x | c) of the decoded canvas. Its log-likelihood is bounded by

    single:    -log p(x) <= -log p(x | c*) + n log K                    c*: the encoder's code
    marginal:  -log p(x) <= -log sum_{c in S} K^-n p(x | c)               S: codes beam search visits

(each sum over a subset of the K^n codes is a lower bound of p(x)). The marginal bound is
never looser than the single one because c* is in S.

With a learned prior (:mod:`vqdraw.prior`) the code is no longer uniform: p(c) is the prior's
probability of the prefix (its exact coding probabilities), and the bounds become

    single:    -log p(x) <= -log p(x | c*) - log p(c*)
    marginal:  -log p(x) <= -log sum_{c in S} p(c) p(x | c)

(the ``*_prior`` fields of :func:`nll_bounds`, next to the uniform ones).

* c*: the greedy code (the search at width 1: Algorithm 1, scored with the likelihood's
  per-option loss), or at ``beam`` B > 1 the best of the width-B search unless greedy's final
  loss is lower or equal (the rule of :func:`vqdraw.core.search.beam_search`).
* S at prefix n: the distinct codes alive after stage n in the searches of widths B, ceil(B/2),
  ceil(B/4), ..., 1 (each width's search is run on batches of a size fixed by that width alone,
  so it is the same search whatever B is). Hence S(B) contains S(B') whenever B = B' * 2^j: the
  marginal bound at beam 64 is never looser than at 8, nor 8 than 1 (beam search alone does not
  nest: the 2B-wide search may drop a code the B-wide one keeps).
* p(x | c): :meth:`vqdraw.core.likelihood.Likelihood.discrete_log_prob`: 8-bit data under the
  continuous likelihoods integrated over bins of width 1/255 centred on the 256 levels (outer
  bins open), so bits per dimension compare with the published ones; the ``mse`` model as a
  Gaussian of fixed std sigma_n per prefix, the maximum-likelihood value
  sqrt(mean squared error of the greedy reconstructions) over the evaluated items, floored at
  1/(255 sqrt 12) (one parameter fitted per prefix: the only number not fixed by the model).

Figures: nats per item, and bits per dimension = nats / (D ln 2), D = elements per item.
"""

from __future__ import annotations

import math

import torch

from ..core.inputs import check_data, check_policy
from ..core.stageloop import Beam, Greedy
from ..errors import InputError
from ..core.search import _check_beam, search_stages

ROWS_PER_SEARCH = 256
"""Canvases per beam-search batch: a width-w search runs on max(1, 256 // w) items at a time."""


def ladder(beam: int) -> list[int]:
    """The search widths whose beams make up S: 1, ..., ceil(B/4), ceil(B/2), B (ascending)."""
    widths = [_check_beam(beam)]
    while widths[-1] > 1:
        widths.append(-(-widths[-1] // 2))
    return widths[::-1]


def mse_sigmas(model, x: torch.Tensor) -> list[float]:
    """Per prefix n = 1..N, the fixed std (data units) of an mse model's Gaussian: the
    maximum-likelihood value over `x` of the greedy reconstructions, floored at 1/(255 sqrt 12)."""
    sq = [0.0] * model.stages
    step = ROWS_PER_SEARCH
    for i in range(0, x.shape[0], step):
        chunk = x[i: i + step]
        for beams in search_stages(model, chunk, 1):
            recon = model.to_data(beams.canvas[:, 0]).double()
            sq[beams.stage - 1] += (recon - chunk.double()).pow(2).sum().item()
    floor = 1.0 / (255 * math.sqrt(12))
    return [max(math.sqrt(s / x[0].numel() / x.shape[0]), floor) for s in sq]


def nll_bounds(model, x: torch.Tensor, *, policy=None, prior=None, beam: int | None = None) -> list[dict]:
    """The single-code and marginal bounds for every prefix n = 1..N over data `x` (B, C, *S)
    (see the module docstring): one dict per prefix with ``stages``, ``nats_single``,
    ``nats_marginal``, ``bits_per_dim_single``, ``bits_per_dim_marginal`` (means over the items),
    ``nats_reconstruction`` (-log p(x | c*)), ``nats_code`` (n log K), ``codes_in_S`` (mean |S|),
    ``beam``, ``count`` and, for mse models, ``sigma``. With ``prior`` (a
    :class:`vqdraw.prior.Prior`) also ``nats_single_prior``, ``nats_marginal_prior``, their
    ``bits_per_dim_*_prior`` and ``nats_code_prior`` (mean -log p(c*)).

    Raises InputError (or ConfigError) when the model's likelihood has no discretisation rule for
    these data (bernoulli: data not 0/1; the others: data not on their grid).

    ``policy``: ``Greedy()`` (the default) or ``Beam(B)``, whose width B sets the searches that make
    up S (:func:`ladder`); ``beam=B`` is the deprecated spelling."""
    policy = check_policy(policy, beam, "nll_bounds")
    if policy is not None and not isinstance(policy, (Greedy, Beam)):
        raise InputError(f"the bounds search with beams: policy must be Greedy() or Beam(width), "
                         f"got {type(policy).__name__:.40}")
    beam = policy.width if isinstance(policy, Beam) else 1
    widths = ladder(beam)
    x = check_data(model.config, x, model.device)
    model.likelihood.check_levels(x)
    n_items, dims, k = x.shape[0], x[0].numel(), model.options
    sigmas = mse_sigmas(model, x) if model.likelihood.name == "mse" else [None] * model.stages
    # per width, per stage: codes (items, w', n), log p(x | c) (items, w'), losses (items, w')
    found = {w: _search_all(model, x, w, sigmas) for w in widths}
    rows = []
    for n in range(1, model.stages + 1):
        codes = torch.cat([found[w][n - 1][0] for w in widths], 1)  # (items, T, n)
        logp = torch.cat([found[w][n - 1][1] for w in widths], 1)  # (items, T)
        single, chosen = _encoder_choice(found, widths, n)  # (items,) log p(x | c*), (items, n) c*
        keep = _first_occurrences(codes)
        marginal = torch.logsumexp(logp.masked_fill(~keep, -math.inf), dim=1)  # (items,)
        code = n * math.log(k)
        nats_single = (code - single).mean().item()
        nats_marginal = (code - marginal).mean().item()
        row = {
            "stages": n,
            "nats_single": nats_single,
            "nats_marginal": nats_marginal,
            "bits_per_dim_single": nats_single / (dims * math.log(2)),
            "bits_per_dim_marginal": nats_marginal / (dims * math.log(2)),
            "nats_reconstruction": -single.mean().item(),
            "nats_code": code,
            "codes_in_S": keep.sum(1).double().mean().item(),
            "beam": int(beam),
            "count": int(n_items),
        }
        if prior is not None:
            code_prior = prior.log_prob(chosen.cpu()).to(single)  # (items,) log p(c*)
            every = prior.log_prob(codes.reshape(-1, n).cpu()).view(codes.shape[:2]).to(logp)
            single_p = -(single + code_prior).mean().item()
            marginal_p = -torch.logsumexp((logp + every).masked_fill(~keep, -math.inf), dim=1).mean().item()
            row.update(nats_single_prior=single_p, nats_marginal_prior=marginal_p,
                       bits_per_dim_single_prior=single_p / (dims * math.log(2)),
                       bits_per_dim_marginal_prior=marginal_p / (dims * math.log(2)),
                       nats_code_prior=-code_prior.mean().item())
        if sigmas[n - 1] is not None:
            row["sigma"] = sigmas[n - 1]
        rows.append(row)
    return rows


def _search_all(model, x, width: int, sigmas) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Run the width-`width` search over all items; per stage (codes, log p, losses)."""
    per_stage: list[list] = [[] for _ in range(model.stages)]
    step = max(1, ROWS_PER_SEARCH // width)
    for i in range(0, x.shape[0], step):
        chunk = x[i: i + step]
        for beams in search_stages(model, chunk, width):
            b, m = beams.codes.shape[:2]
            data = chunk.repeat_interleave(m, dim=0)
            logp = model.likelihood.discrete_log_prob(beams.canvas.flatten(0, 1), data,
                                                      sigma=sigmas[beams.stage - 1]).view(b, m)
            per_stage[beams.stage - 1].append((beams.codes, logp, beams.losses))
    return [tuple(torch.cat(parts, 0) for parts in zip(*stage)) for stage in per_stage]


def _encoder_choice(found, widths, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(x | c*), c*) per item at prefix n: greedy, or the widest search's best where its
    loss is strictly lower than greedy's (the rule of beam_search's keep_greedy)."""
    greedy_codes, greedy_logp, greedy_loss = found[1][n - 1]
    if widths[-1] == 1:
        return greedy_logp[:, 0], greedy_codes[:, 0]
    codes, logp, loss = found[widths[-1]][n - 1]
    use_beam = loss[:, 0] < greedy_loss[:, 0]
    return (torch.where(use_beam, logp[:, 0], greedy_logp[:, 0]),
            torch.where(use_beam[:, None], codes[:, 0], greedy_codes[:, 0]))


def _first_occurrences(codes: torch.Tensor) -> torch.Tensor:
    """(items, T, n) codes -> (items, T) bool: True at the first occurrence of each distinct code."""
    same = (codes.unsqueeze(2) == codes.unsqueeze(1)).all(-1)  # (items, T, T)
    earlier = torch.ones(same.shape[1:], dtype=torch.bool, device=codes.device).tril(-1)
    return ~(same & earlier).any(-1)


def save_plot(rows: list[dict], path, title: str = "") -> None:
    """Both bounds (bits per dimension) against the number of stages; the code term n log K
    dashed: the looseness of the single-code bound, growing with n, made visible."""
    from matplotlib.figure import Figure

    n = [r["stages"] for r in rows]
    dims_ln2 = rows[0]["nats_single"] / rows[0]["bits_per_dim_single"] if rows[0]["bits_per_dim_single"] else 1.0
    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.add_subplot()
    ax.plot(n, [r["bits_per_dim_single"] for r in rows], "o-", label="single code: -log p(x|c*) + n log K")
    ax.plot(n, [r["bits_per_dim_marginal"] for r in rows], "s-", label="marginal over S (beam search)")
    ax.plot(n, [r["nats_code"] / dims_ln2 for r in rows], "--", color="grey", label="code term n log K alone")
    ax.set_xlabel("stages n (code prefix)")
    ax.set_ylabel("bits per dimension (upper bound)")
    ax.set_title(title or f"log-likelihood bounds, beam {rows[0]['beam']}, {rows[0]['count']} items", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
