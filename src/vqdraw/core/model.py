"""VQDraw: encode (Algorithm 1), decode (Algorithm 2), sample, the training objective (eq. 3), save/load.

    data x in [0, 1] --likelihood.target--> X
    canvas X' = 0
    for stage i = 1..N:
        proposals R_i,1..K = X' + refiner_i(X')          (B, K, C, *S)
        losses   L(R_i,j, X)   (the likelihood)          (B, K)
        c_i = argmin_j losses    (encode)   or  given    (decode)
        X' = R_i,c_i                                     (B, C, *S)
    codes (B, N) in [0, K);  reconstruction = likelihood.to_data(X')

The loop itself lives in :mod:`vqdraw.core.stageloop`; encoding, decoding, training and beam search
all run through it, so they cannot drift apart. Data are sequences (C, L), images (C, H, W) or
volumes (C, D, H, W).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn as nn

from .. import runs
from .config import Contrastive, ModelConfig, get_preset, override
from ..errors import ConfigError, InputError
from .inputs import check_codes, check_policy, check_count, check_data, check_output, check_stages
from .likelihood import make_likelihood
from .losses import choice_agreement_nce, objective, shifted_view
from .refiner import make_refiner
from .search import beam_search
from .sizing import check_size
from .stageloop import (Beam, EncodeResult, Exploration, Follow, Greedy, LoopOptions, Policy, run,
                        run_checkpointed, run_inference, run_plain)

STORED = runs.Format("vqdraw-model", 1)  # config.json + model.safetensors (see vqdraw.runs)
FORMAT, FORMAT_VERSION = STORED.name, STORED.version

__all__ = ["VQDraw", "EncodeResult"]


DECODE_CHUNK = 1024
""":meth:`VQDraw.decode` decodes at most this many codes at once (sample -n 100000 stays bounded)."""


class VQDraw(nn.Module):
    """A VQ-DRAW model (Nichol, 2020): a tensor as N integers in [0, K).

    Data are float tensors in [0, 1], channels first (B, C, *S); normalisation happens inside.
    ``loop`` holds the stage loop's speed options (:class:`~vqdraw.core.stageloop.LoopOptions`).
    """

    def __init__(self, config: ModelConfig, loop: LoopOptions = LoopOptions()):
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise ConfigError(f"VQDraw takes a ModelConfig, got {type(config).__name__}")
        check_size(config)  # measured on the meta device: an absurd config is refused before allocating
        self.config = config
        likelihood = make_likelihood(config)
        self.refiner = make_refiner(config, likelihood)
        self.likelihood = likelihood
        self.loop = loop

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "VQDraw":
        """Build a fresh model from a Table 1 preset; keyword arguments override ModelConfig fields."""
        return cls(override(get_preset(name).model, **overrides))

    @classmethod
    def from_pretrained(cls, name: str, map_location: str | torch.device = "cpu") -> "VQDraw":
        """A model that ships with vqdraw, ready to use: ``VQDraw.from_pretrained("mnist")``
        (the same as ``VQDraw.load("pretrained:mnist")``; model cards in :mod:`vqdraw.pretrained`)."""
        from .. import pretrained

        if not isinstance(name, str):
            raise InputError(f"from_pretrained takes a name such as 'mnist', got {name!r:.60}")
        return cls.load(pretrained.folder(name), map_location)

    @property
    def options(self) -> int:
        return self.config.options

    @property
    def stages(self) -> int:
        return self.config.stages

    @property
    def device(self) -> torch.device:
        return self.refiner.first_bias.device

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """Data in [0, 1] -> what the canvas is compared with: normalised values (mse, gaussian,
        logistic), the data itself (bernoulli) or class indices (categorical)."""
        return self.likelihood.target(x)

    def to_data(self, canvas: torch.Tensor) -> torch.Tensor:
        """A canvas -> data in [0, 1] (mse: de-normalised and clamped; bernoulli: sigmoid)."""
        return self.likelihood.to_data(canvas)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Deprecated name of :meth:`target` (which is not a normalisation for every likelihood)."""
        warnings.warn("VQDraw.normalize is now VQDraw.target", DeprecationWarning, stacklevel=2)
        return self.target(x)

    def denormalize(self, canvas: torch.Tensor) -> torch.Tensor:
        """Deprecated name of :meth:`to_data`."""
        warnings.warn("VQDraw.denormalize is now VQDraw.to_data", DeprecationWarning, stacklevel=2)
        return self.to_data(canvas)

    def propose(self, canvas: torch.Tensor, stage: int) -> torch.Tensor:
        """Stage `stage` (0-based): canvas (B, C, *S) -> proposals (B, K, C, *S)."""
        return self.refiner(canvas, stage)

    # ------------------------------------------------------------------ Algorithms 1 and 2
    def encode(self, x: torch.Tensor, *, stages: int | None = None, return_reconstruction: bool = False,
               policy: Policy | None = None, encoder=None, prefix: torch.Tensor | None = None,
               beam: int | None = None) -> torch.Tensor | EncodeResult:
        """Algorithm 1 (greedy): data (B, C, *S) in [0, 1] -> codes (B, n) int64.

        ``return_reconstruction=True`` returns an :class:`EncodeResult`: the codes, the
        reconstruction (free: the encoder's final canvas) and every per-stage option loss.
        ``policy`` says how each stage chooses (:mod:`vqdraw.core.stageloop`): ``Greedy()`` (the
        default, Algorithm 1), ``Beam(width)`` (beam search, :func:`vqdraw.core.search.beam_search`,
        never worse than greedy), ``Follow(codes)`` (these codes for the first stages, greedy
        after them), or any :class:`~vqdraw.core.stageloop.Policy` with one choice per item (run
        stage by stage through :func:`~vqdraw.core.stageloop.step`).
        ``encoder``: a one-pass encoder (e.g. :class:`vqdraw.training.distill.DistilledEncoder`) whose
        ``predict(x)`` gives the codes; the reconstruction then follows them.
        ``prefix`` (B, s): the same as ``policy=Follow(prefix)`` (distillation's segment-wise labels).
        ``beam=W`` is the deprecated spelling of ``policy=Beam(W)``.
        """
        n = check_stages(self.config, stages)
        policy = check_policy(policy, beam, "encode")
        if isinstance(policy, Follow):
            if prefix is not None:
                raise InputError("give policy=Follow(codes) or prefix=, not both")
            policy, prefix = None, policy.codes
        width = policy.width if isinstance(policy, Beam) else 1
        if type(policy) is Greedy or width == 1 and isinstance(policy, Beam):
            policy = None
        x = check_data(self.config, x, self.device)
        if encoder is not None and policy is not None:
            raise InputError("a one-pass encoder chooses every code itself: no policy")
        if prefix is not None:
            if encoder is not None or policy is not None:
                raise InputError("a code prefix is continued greedily: no encoder, no other policy")
            prefix = check_codes(self.config, prefix).to(self.device)
            if prefix.shape[0] != x.shape[0] or prefix.shape[1] > n:
                raise InputError(f"a prefix of shape {tuple(prefix.shape)} for {x.shape[0]} items of {n} stages")
        if width != 1:
            res = beam_search(self, x, width, n)
            return res if return_reconstruction else res.codes
        if policy is not None:
            with torch.inference_mode():
                trace = run_plain(self.refiner, self.likelihood, range(n), policy, target=self.likelihood.target(x))
            if not return_reconstruction:
                return trace.codes
            return EncodeResult(trace.codes, self.likelihood.to_data(trace.canvas), trace.losses)
        if encoder is not None:
            codes = check_codes(self.config, encoder.predict(x))[:, :n]
            return self.score(x, codes) if return_reconstruction else codes.to(self.device)
        trace = run_inference(self.refiner, self.likelihood, n, target=self.likelihood.target(x), codes=prefix,
                              options=self.loop)
        if not return_reconstruction:
            return trace.codes
        return EncodeResult(trace.codes, self.likelihood.to_data(trace.canvas), trace.losses)

    def score(self, x: torch.Tensor, codes: torch.Tensor) -> EncodeResult:
        """Follow given `codes` (B, n) for data `x`: their reconstruction (= ``decode(codes)``)
        and the option losses at every stage along them, (B, n, K)."""
        x = check_data(self.config, x, self.device)
        codes = check_codes(self.config, codes).to(self.device)
        if codes.shape[0] != x.shape[0]:
            raise InputError(f"{codes.shape[0]} codes for {x.shape[0]} items")
        trace = run_inference(self.refiner, self.likelihood, codes.shape[1], target=self.likelihood.target(x),
                              codes=codes, options=self.loop)
        return EncodeResult(trace.codes, self.likelihood.to_data(trace.canvas), trace.losses)

    def decode(self, codes: torch.Tensor, stages: int | None = None) -> torch.Tensor:
        """Algorithm 2: codes (B, n) -> data (B, C, *S) in [0, 1].

        ``stages`` decodes only the first ``stages`` entries of each code (a prefix: fewer bits,
        a coarser result). By default all the columns given are decoded.
        """
        codes = check_codes(self.config, codes)
        n = check_stages(self.config, codes.shape[1] if stages is None else stages)
        if n > codes.shape[1]:
            raise InputError(f"asked to decode {n} stages but the codes have only {codes.shape[1]}")
        if codes.shape[0] > DECODE_CHUNK:  # bounded memory: K proposals per item, DECODE_CHUNK items at a time
            return torch.cat([self.decode(part, n) for part in codes.split(DECODE_CHUNK)])
        trace = run_inference(self.refiner, self.likelihood, n, codes=codes[:, :n].to(self.device),
                              options=self.loop)
        with torch.inference_mode():
            return self.likelihood.to_data(trace.canvas)

    def reconstruct(self, x: torch.Tensor, stages: int | None = None, beam: int | None = None, *,
                    policy: Policy | None = None) -> torch.Tensor:
        """Encode then decode, at the cost of one encode; ``policy`` as in :meth:`encode`
        (``beam=W`` is the deprecated spelling of ``policy=Beam(W)``)."""
        policy = check_policy(policy, beam, "reconstruct")
        return self.encode(x, stages=stages, return_reconstruction=True, policy=policy).reconstruction

    def sample(self, n: int, *, stages: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode `n` uniformly random codes (the model's prior is uniform)."""
        k = check_stages(self.config, stages)
        n = check_output(self.config, check_count(n, "the number of samples"), "samples")
        return self.decode(torch.randint(0, self.options, (n, k), generator=generator))

    def loss(self, x: torch.Tensor, alpha: float = 0.01, grad_checkpoint: bool = False, *,
             stages: int | None = None, epsilon: float = 0.0, grad_decay: float = 0.0,
             final_coeff: float = 0.0, final_only: bool = False, contrastive: Contrastive | None = None) -> dict:
        """The training objective, eq. 3, with gradients through the chosen path (codes held fixed).

        Returns the named terms of :func:`vqdraw.core.losses.objective` plus ``codes`` (B, n), the
        options taken. The paper's alternatives (``TrainConfig.loss_options()``; all off by
        default): ``stages`` trains the first n only; ``epsilon`` and ``grad_decay`` (see
        :class:`~vqdraw.core.stageloop.Exploration`; with ε the loss terms still use each stage's best
        option, as the author's code does); ``final_coeff``, ``final_only`` (see ``objective``).
        ``contrastive`` (not in the paper; ``TrainConfig.contrastive``): adds its weight times
        :func:`~vqdraw.core.losses.choice_agreement_nce` between the first stages' option losses of
        ``x`` and of a randomly shifted view of it (reported as the ``contrastive`` term).
        """
        n = check_stages(self.config, stages)
        data = check_data(self.config, x, self.device)
        target = self.likelihood.target(data)
        explore = Exploration(epsilon, grad_decay) if (epsilon or grad_decay) else None
        if grad_checkpoint and torch.is_grad_enabled():
            trace = run_checkpointed(self.refiner, self.likelihood, target, n, self.config.segment, self.loop,
                                     explore=explore)
        else:
            trace = run(self.refiner, self.likelihood, range(n), target=target, options=self.loop, explore=explore)
        best = trace.losses.argmin(2) if epsilon else trace.codes  # the best option's loss, not the taken one's
        terms = objective(trace.losses, best, alpha, final_coeff=final_coeff, final_only=final_only)
        terms["codes"] = trace.codes
        if contrastive is not None and contrastive.weight > 0:
            m = min(contrastive.stages, n)
            view = self.likelihood.target(shifted_view(data, contrastive.shift))
            other = run(self.refiner, self.likelihood, range(m), target=view, options=self.loop)
            nce = choice_agreement_nce(trace.losses[:, :m], other.losses, contrastive.temperature)
            terms["contrastive"] = nce
            terms["loss"] = terms["loss"] + contrastive.weight * nce
        return terms

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write config.json and model.safetensors into `directory` (each file atomically)."""
        return runs.save(directory, STORED, self.config.to_dict(), self.state_dict())

    def describe(self) -> dict:
        return runs.describe(STORED, self.config.to_dict())

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "VQDraw":
        """Load a model folder written by :meth:`save`, or a training run folder (its newest
        checkpoint). No architecture flags: the config travels with the weights."""
        if not isinstance(path, (str, Path)) or not str(path):
            raise InputError(f"load takes a folder path, got {path!r:.60}")
        model, _ = runs.load(runs.resolve_model_dir(path), STORED,
                             lambda config: cls(ModelConfig.from_dict(config)), map_location)
        return model

    def fingerprint(self) -> bytes:
        """16 bytes identifying this exact model: SHA-256 of its config and weights."""
        return runs.fingerprint(self.config.to_dict(), self.state_dict())


SAMPLE_CHUNK = 256
"""``vqdraw sample`` makes and writes at most this many samples at a time (a picture's grid: whole
rows of it), so its memory does not grow with ``-n``."""


def sample_chunks(model, count: int, *, stages: int | None = None, seed: int = 0, codes=None,
                  chunk: int = SAMPLE_CHUNK):
    """Decodings of ``count`` uniformly random codes, ``chunk`` at a time (the last one shorter):
    together exactly the codes of ``model.sample(count, stages=stages, generator=g)`` with ``g``
    seeded with ``seed`` (torch draws them one after the other), or, given ``codes`` (count, n),
    of those. Checked before this returns; each chunk is decoded only when asked for."""
    if codes is not None:
        count = int(codes.shape[0])
    else:
        k = check_stages(model.config, stages)
        count = check_count(count, "the number of samples")
    chunk = max(1, int(chunk))

    def chunks():
        g = torch.Generator().manual_seed(seed)
        for start in range(0, count, chunk):
            m = min(chunk, count - start)
            part = torch.randint(0, model.options, (m, k), generator=g) if codes is None else codes[start: start + m]
            yield model.decode(part)

    return chunks()
