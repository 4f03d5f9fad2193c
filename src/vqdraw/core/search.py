"""Beam search over codes: a better encoder than the paper's greedy Algorithm 1, same decoder.

Greedy encoding (Algorithm 1) keeps one canvas and picks, at every stage, the option whose
proposal is closest to the target. Beam search keeps the ``beam`` best partial codes instead:

    beams   = [empty code]                                   canvas 0
    for stage i = 1..n:
        every beam proposes K children                       one refiner call on (B*M) canvases
        score(child) = L(child canvas, X)                    normalised MSE after stage i
        beams = the `beam` lowest-scoring children per image (ties: lowest beam, then option)
    result = the lowest-scoring complete code per image

Each stage is one :func:`vqdraw.core.stageloop.step` under the :class:`~vqdraw.core.stageloop.Beam`
policy on all B*M canvases (images x beams flattened into the batch dimension), so time and
memory grow linearly in ``beam``. Beams with the same code prefix have the same canvas, so the
refiner runs once per distinct prefix: once at stage 0 (the empty code), at most K times at
stage 1, and so on. Scores are the likelihood's per-option losses, as greedy's are.

Guarantee, "never worse than greedy": pruning can drop the greedy path (its prefix may fall out
of the beam at some stage and would have won later), so by default ``beam_search`` also runs
``model.encode(x)`` (greedy; it costs about 1/beam of the search) and keeps, per image, the
greedy result unless the search found a strictly lower final loss. The result is therefore
never worse than ``model.encode(x)`` for any image, comparing the losses the two report.
With ``beam=1`` the search is the greedy algorithm (the best child of the only beam, ties to
the lowest option as with ``argmin``) and gives the greedy codes without a second run; its
losses equal greedy's up to float rounding (greedy may compute them with other arithmetic).

Nothing here changes the decoder: the codes decode with :meth:`VQDraw.decode` as usual.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError
from .config import MAX_BEAM
from .inputs import check_data, check_stages
from .stageloop import EncodeResult, beam_stages


MAX_CANVASES = 2048
"""Images x beams searched at once; more images are searched in chunks (each image's search is
independent of the others)."""


def beam_search(model, x: torch.Tensor, beam: int, stages: int | None = None,
                *, keep_greedy: bool = True):
    """Beam-search codes for images `x` (B, C, H, W) in [0, 1] -> :class:`EncodeResult`.

    ``codes`` (B, n): the best complete code found for each image; ``reconstruction``: its final
    canvas, denormalised; ``losses`` (B, n, K): the K option losses at every stage *along the
    returned code* (same meaning as greedy's: ``losses[b, i, codes[b, i]]`` is the normalised MSE
    of the prefix of length i+1).

    ``keep_greedy`` (default on) also runs ``model.encode(x)`` and keeps its result for every
    image where the search did not find a strictly lower final loss, which makes the result never
    worse than greedy (see the module docstring). With ``beam=1`` there is no second run.
    """
    beam = _check_beam(beam)
    n = check_stages(model.config, stages)
    x = check_data(model.config, x, model.device)
    if x.shape[0] > 1 and x.shape[0] * beam > MAX_CANVASES:  # bounded memory: images in chunks
        parts = [beam_search(model, part, beam, n, keep_greedy=keep_greedy)
                 for part in x.split(max(1, MAX_CANVASES // beam))]
        return EncodeResult(*(torch.cat([getattr(p, f) for p in parts])
                              for f in ("codes", "reconstruction", "losses")))
    greedy = None
    if n == 0 or (keep_greedy and beam > 1):
        greedy = model.encode(x, stages=n, return_reconstruction=True)
        if n == 0:
            return greedy
    with torch.inference_mode():
        codes, canvas, losses = _search(model, model.target(x), beam, n)
        result = EncodeResult(codes, model.to_data(canvas), losses)
        if greedy is not None:
            result = _keep_better(result, greedy)
    return result


def final_losses(codes: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """Normalised MSE of each image's complete code, (B,), from an EncodeResult's codes/losses."""
    return losses[:, -1].gather(1, codes[:, -1:]).squeeze(1)


def _check_beam(beam) -> int:
    try:
        ok = not isinstance(beam, bool) and int(beam) == beam and 1 <= int(beam) <= MAX_BEAM
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise InputError(f"beam must be a whole number in 1..{MAX_BEAM}, got {beam!r:.40}")
    return int(beam)


@dataclass
class Beams:
    """The live beams after one stage of the search, best first (per item, sorted by loss)."""

    stage: int
    """Stages run so far (the codes' length)."""
    codes: torch.Tensor
    """(B, M, stage) int64: distinct codes per item."""
    losses: torch.Tensor
    """(B, M): each code's loss after its last stage (the likelihood's per-option loss)."""
    canvas: torch.Tensor
    """(B, M, C', *S): each code's canvas (decode it with ``model.denormalize``)."""


def search_stages(model, x: torch.Tensor, beam: int, stages: int | None = None):
    """Run the beam search on data `x` and yield its :class:`Beams` after every stage 1..n.

    The beams after stage s are exactly those of a search with ``stages=s``: the set of codes
    beam search visits at its last stage (used by :mod:`vqdraw.evaluate.nll` for every code prefix).
    The greedy comparison of :func:`beam_search` is not part of it.
    """
    beam = _check_beam(beam)
    n = check_stages(model.config, stages)
    x = check_data(model.config, x, model.device)
    with torch.inference_mode():
        steps = beam_stages(model.refiner, model.likelihood, model.target(x), beam, n)
    while True:
        with torch.inference_mode():  # per stage: the caller's code between stages runs outside it
            step = next(steps, None)
        if step is None:
            return
        yield Beams(step.stage, step.prefix, step.scores, step.canvas)


def _search(model, target: torch.Tensor, beam: int, n: int):
    """The beam search proper: returns codes (B, n), final canvas (B, C', *S), losses (B, n, K).

    Beams that share a code prefix share a canvas (at stage 0 every image has the empty code,
    at stage 1 there are at most K distinct prefixes whatever the batch): the refiner runs once
    per distinct prefix, and its proposals are gathered back to every beam that needs them.
    """
    b = target.shape[0]
    rows = torch.arange(b, device=target.device)
    # Per stage: the option losses of every live beam (B, M, K) and each survivor's parent beam
    # (B, M'). Backtracking through the parents at the end gives the losses along the winner.
    stage_losses, parents = [], []
    for step in beam_stages(model.refiner, model.likelihood, target, beam, n):
        stage_losses.append(step.option_scores)
        parents.append(step.parent)
    # After the last stage the beams are sorted by final loss: beam 0 is the best code.
    best = torch.zeros(b, dtype=torch.long, device=target.device)
    codes, final_canvas = step.prefix[rows, best], step.canvas[rows, best]
    losses = []
    for stage in reversed(range(n)):
        best = parents[stage][rows, best]
        losses.append(stage_losses[stage][rows, best])
    losses.reverse()
    return codes, final_canvas, torch.stack(losses, 1)


def _keep_better(result, greedy):
    """Per image, the beam result unless greedy's final loss is lower or equal."""
    use_beam = final_losses(result.codes, result.losses) < final_losses(greedy.codes, greedy.losses)  # (B,)
    pick = use_beam.view(-1, *([1] * (result.reconstruction.dim() - 1)))
    return EncodeResult(
        torch.where(use_beam.unsqueeze(1), result.codes, greedy.codes),
        torch.where(pick, result.reconstruction, greedy.reconstruction),
        torch.where(use_beam.view(-1, 1, 1), result.losses, greedy.losses.to(result.losses.dtype)),
    )
