"""VQDraw: encode (Algorithm 1), decode (Algorithm 2), sample, train objective (eq. 3), save/load.

    image x in [0, 1] --normalise--> X
    canvas X' = 0
    for stage i = 1..N:
        proposals R_i,1..K = X' + refiner_i(X')          (B, K, C, H, W)
        losses   L(R_i,j, X)                             (B, K)
        c_i = argmin_j losses    (encode)   or  given    (decode)
        X' = R_i,c_i                                     (B, C, H, W)
    codes (B, N) in [0, K);  reconstruction = denormalise(X') clamped to [0, 1]

Encoding, decoding and training all run through :meth:`VQDraw._run`, so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from . import runs
from .config import ModelConfig, get_preset, override
from .errors import InputError
from .losses import objective, option_losses, select_option, widen  # noqa: F401 (option_losses: API)
from .refiner import SegmentedRefiner

STORED = runs.Format("vqdraw-model", 1)  # config.json + model.safetensors (see vqdraw.runs)
FORMAT, FORMAT_VERSION = STORED.name, STORED.version
GROUP_FRACTION = 0.75  # _run refines distinct canvases only while they are at most this share of B
DEDUP_ON_CPU = True  # find distinct canvases with torch.unique on the CPU (False: the no-sync rule)
GROUP_BUCKET = 8  # distinct canvases are refined in batches of a multiple of this
CPU_INFERENCE_CHUNK = 64  # encode/decode on the CPU run this many images at a time (cache-sized)


@dataclass
class EncodeResult:
    """What encoding yields besides the codes (Algorithm 1 gives the reconstruction for free)."""

    codes: torch.Tensor
    """(B, n) int64 chosen options."""
    reconstruction: torch.Tensor
    """(B, C, H, W) images in [0, 1] after the n stages."""
    losses: torch.Tensor
    """(B, n, K) loss of every option at every stage (normalised MSE)."""


@dataclass
class _Trace:
    codes: torch.Tensor  # (B, n)
    canvas: torch.Tensor  # (B, C, H, W), normalised
    losses: torch.Tensor | None  # (B, n, K), or None when decoding without a target


class VQDraw(nn.Module):
    """A VQ-DRAW model (Nichol, 2020): an image as N integers in [0, K).

    Images are float tensors in [0, 1], NCHW; normalisation happens inside, from the config.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.refiner = SegmentedRefiner(config)
        c = config.image_shape[0]
        self.register_buffer("mean", torch.tensor(config.mean).view(1, c, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, c, 1, 1), persistent=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_preset(cls, name: str, **overrides) -> "VQDraw":
        """Build a fresh model from a Table 1 preset; keyword arguments override ModelConfig fields."""
        return cls(override(get_preset(name).model, **overrides))

    @property
    def options(self) -> int:
        return self.config.options

    @property
    def stages(self) -> int:
        return self.config.stages

    @property
    def device(self) -> torch.device:
        return self.refiner.first_bias.device

    # ------------------------------------------------------------------ the shared stage loop
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return (z * self.std + self.mean).clamp(0.0, 1.0)

    def propose(self, canvas: torch.Tensor, stage: int) -> torch.Tensor:
        """Stage `stage` (0-based): canvas (B, C, H, W) -> proposals (B, K, C, H, W)."""
        return self.refiner(canvas, stage)

    def _run(
        self,
        canvas: torch.Tensor | None,
        stages: range,
        target: torch.Tensor | None = None,
        codes: torch.Tensor | None = None,
    ) -> _Trace:
        """Run `stages` from `canvas`. Choose the arg-min option (target given, codes None) or
        follow `codes` (B, len(stages)). Per-option losses are computed whenever a target is given.

        ``canvas=None`` is the zero canvas of Algorithm 1. The arithmetic is arranged for speed
        without changing results beyond float rounding:

        * Images that share a canvas share the refiner's work. The zero canvas (``None``, or
          detected) is refined once for the whole batch. After a shared stage the batch holds few
          distinct canvases (a trained MNIST model gives ~10 distinct first-stage codes in a batch
          of 32, ~23 in 256): while the distinct canvases, rounded up to a multiple of
          ``GROUP_BUCKET``, number at most ``GROUP_FRACTION`` x B, the refiner runs on those only
          (``unique``, with ``group`` mapping images to them). On the CPU they are found with ``torch.unique``; elsewhere, to
          avoid a host synchronisation, only while all U*K candidates are fewer than B.
        * Per-option losses come from :func:`~vqdraw.losses.select_option` (no proposals tensor);
          gradients still reach every option through the losses and the chosen path through the
          canvas, exactly as with ``option_losses(propose(...))`` and indexing.

        Encoding and decoding the same codes take the same path, so decode reproduces the
        encoder's canvas bit for bit.
        """
        if target is None and codes is None:
            raise ValueError("_run needs a target to choose options or the codes to follow")
        ref = target if target is not None else codes
        b = canvas.shape[0] if canvas is not None else ref.shape[0]
        shape = (b, *self.config.image_shape)
        device = canvas.device if canvas is not None else ref.device
        group = unique = None
        if canvas is None or (not canvas.requires_grad and not bool(canvas.any())):
            # one canvas for all images: refine it once (ties to the batch come back via `group`)
            unique = torch.zeros((1, *shape[1:]), device=device)
            group = torch.zeros(b, dtype=torch.long, device=device)
            canvas = None
        dedup = DEDUP_ON_CPU and device.type == "cpu"  # torch.unique's result size needs the host
        k = self.options
        chosen, losses = [], []
        for j, stage in enumerate(stages):
            if group is not None:
                deltas = self.refiner.deltas(unique, stage)  # (U, K, C, H, W)
                canvas = unique[group] if unique.shape[0] > 1 else unique.expand(shape)
            else:
                deltas = self.refiner.deltas(canvas, stage)  # (B, K, C, H, W)
            follow = None if codes is None else codes[:, j]
            if target is not None:
                stage_losses, choice, picked = select_option(deltas, target - canvas, follow, group,
                                                             reuse_deltas=True)
                losses.append(stage_losses)
            else:
                rows = group if group is not None else torch.arange(b, device=device)
                choice = follow
                picked = widen(deltas.flatten(2)[rows, choice]).view(shape)
            chosen.append(choice)
            if group is not None:
                u = unique.shape[0]
                if dedup:
                    ids, inverse = torch.unique(group * k + choice, return_inverse=True)
                    padded = -(-len(ids) // GROUP_BUCKET) * GROUP_BUCKET
                    if padded <= GROUP_FRACTION * b:  # refine the distinct next canvases only
                        # padded to a multiple of GROUP_BUCKET with repeats of the first (never
                        # referenced by `group`): few distinct batch sizes, so oneDNN (and
                        # torch.compile) reuse their kernels instead of building new ones
                        ids = torch.cat([ids, ids[:1].expand(padded - len(ids))])
                        src = ids.div(k, rounding_mode="floor")
                        unique = unique[src] + widen(deltas[src, ids - src * k])
                        group = inverse
                        continue
                elif u * k < b:  # all U*K candidates: fewer than the images, no host sync
                    unique = (unique.unsqueeze(1) + widen(deltas)).flatten(0, 1)
                    group = group * k + choice
                    continue
                # back to one canvas per image; gradients flow through the chosen path only
                canvas = picked if u == 1 else canvas + picked
                group = unique = None
            else:
                canvas = canvas + picked  # gradients flow through the chosen path only
        if group is not None:
            canvas = unique[group] if unique.shape[0] > 1 else unique.expand(shape).clone()
        return _Trace(
            codes=torch.stack(chosen, 1) if chosen else torch.zeros((b, 0), dtype=torch.long, device=device),
            canvas=canvas,
            losses=torch.stack(losses, 1) if losses else None,
        )

    def _run_checkpointed(self, target: torch.Tensor, stages: int) -> _Trace:
        """Like `_run` with a target, recomputing each segment's activations during backward."""
        canvas = None  # the zero canvas
        codes, losses = [], []
        seg = self.config.segment
        for start in range(0, stages, seg):
            span = range(start, min(start + seg, stages))

            def run_segment(c: torch.Tensor | None, span: range = span):
                t = self._run(c, span, target=target)
                return t.canvas, t.losses, t.codes

            canvas, seg_losses, seg_codes = checkpoint(run_segment, canvas, use_reentrant=False)
            codes.append(seg_codes)
            losses.append(seg_losses)
        return _Trace(torch.cat(codes, 1), canvas, torch.cat(losses, 1))

    def _run_inference(self, target: torch.Tensor | None, codes: torch.Tensor | None, n: int) -> _Trace:
        """`_run` from the zero canvas for encoding (`target`) or decoding (`codes`), without
        autograd. On the CPU the batch is run ``CPU_INFERENCE_CHUNK`` images at a time: a batch
        of 256 MNIST images has 51 MB activations per layer, and oneDNN's convolutions run ~1.5x
        slower per image once they no longer fit the caches. Each image's arithmetic is the
        same (up to the convolution's float rounding), and encode and decode chunk alike."""
        ref = target if target is not None else codes
        b = ref.shape[0]
        shape = self.config.image_shape
        if b == 0:  # an empty batch: empty results of the right shapes
            return _Trace(torch.zeros((0, n), dtype=torch.long, device=ref.device),
                          torch.zeros((0, *shape), device=ref.device),
                          None if target is None else torch.zeros((0, n, self.options), device=ref.device))
        step = CPU_INFERENCE_CHUNK if ref.device.type == "cpu" else b
        parts = []
        for i in range(0, b, step):
            t = None if target is None else target[i : i + step]
            c = None if codes is None else codes[i : i + step]
            parts.append(self._run(None, range(n), target=t, codes=c))  # None: the zero canvas
        if len(parts) == 1:
            return parts[0]
        losses = None if parts[0].losses is None else torch.cat([p.losses for p in parts])
        return _Trace(torch.cat([p.codes for p in parts]), torch.cat([p.canvas for p in parts]), losses)

    # ------------------------------------------------------------------ public API
    def encode(
        self,
        x: torch.Tensor,
        *,
        stages: int | None = None,
        return_reconstruction: bool = False,
        beam: int = 1,
        encoder=None,
    ) -> torch.Tensor | EncodeResult:
        """Algorithm 1 (greedy): images (B, C, H, W) in [0, 1] -> codes (B, n) int64.

        With ``return_reconstruction=True`` returns an :class:`EncodeResult` holding the codes,
        the reconstruction (free: it is the encoder's final canvas) and every per-stage loss.
        ``beam > 1``: beam search (:func:`vqdraw.search.beam_search`, never worse than greedy).
        ``encoder``: an object with ``predict(images) -> (B, N) codes`` (the distilled encoder of
        :mod:`vqdraw.distill`) chooses the codes; the reconstruction and losses follow them.
        """
        if encoder is not None:  # compatibility shim until the stage-loop rewrite lands
            if beam != 1:
                raise InputError(f"an encoder predicts the codes itself; beam must be 1, got {beam}")
            n = self._check_stages(stages)
            x = self._check_images(x)
            codes = encoder.predict(x)[:, :n].to(self.device)
            if not return_reconstruction:
                return codes
            with torch.inference_mode():
                trace = self._run_inference(self.normalize(x), codes, n)
            return EncodeResult(trace.codes, self.denormalize(trace.canvas), trace.losses)
        if beam != 1:
            from .search import beam_search

            res = beam_search(self, x, beam, stages)
            return res if return_reconstruction else res.codes
        n = self._check_stages(stages)
        x = self._check_images(x)
        with torch.inference_mode():
            target = self.normalize(x)
            trace = self._run_inference(target, None, n)
        if not return_reconstruction:
            return trace.codes
        return EncodeResult(trace.codes, self.denormalize(trace.canvas), trace.losses)

    def decode(self, codes: torch.Tensor, stages: int | None = None) -> torch.Tensor:
        """Algorithm 2: codes (B, n) -> images (B, C, H, W) in [0, 1].

        ``stages`` decodes only the first ``stages`` entries of each code (a prefix: fewer bits,
        a coarser image). By default all the columns given are decoded.
        """
        codes = self._check_codes(codes)
        n = self._check_stages(codes.shape[1] if stages is None else stages)
        if n > codes.shape[1]:
            raise InputError(f"asked to decode {n} stages but the codes have only {codes.shape[1]}")
        with torch.inference_mode():
            trace = self._run_inference(None, codes[:, :n].to(self.device), n)
            return self.denormalize(trace.canvas)

    def reconstruct(self, x: torch.Tensor, stages: int | None = None, beam: int = 1) -> torch.Tensor:
        """Encode then decode, at the cost of one encode."""
        return self.encode(x, stages=stages, return_reconstruction=True, beam=beam).reconstruction

    def sample(
        self, n: int, *, stages: int | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Decode `n` uniformly random codes (the model's prior is uniform)."""
        k = self._check_stages(stages)
        codes = torch.randint(0, self.options, (n, k), generator=generator)
        return self.decode(codes)

    def loss(self, x: torch.Tensor, alpha: float = 0.01, grad_checkpoint: bool = False) -> dict:
        """The training objective, eq. 3, with gradients through the chosen path (codes held fixed).

        Returns the named terms of :func:`vqdraw.losses.objective` plus ``codes`` (B, N).
        """
        x = self._check_images(x)
        target = self.normalize(x)
        if grad_checkpoint and torch.is_grad_enabled():
            trace = self._run_checkpointed(target, self.stages)
        else:
            trace = self._run(None, range(self.stages), target=target)  # None: the zero canvas
        terms = objective(trace.losses, trace.codes, alpha)
        terms["codes"] = trace.codes
        return terms

    # ------------------------------------------------------------------ checks
    def _check_images(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise InputError(f"images must be a torch.Tensor, got {type(x).__name__}")
        c, h, w = self.config.image_shape
        if x.dim() != 4 or tuple(x.shape[1:]) != (c, h, w):
            raise InputError(
                f"this model takes images of shape (B, {c}, {h}, {w}); got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise InputError(f"images must be float in [0, 1], got dtype {x.dtype}")
        # contiguous NCHW: a channels-last input would make the convolutions pick other kernels,
        # and encode's reconstruction must equal decode's bit for bit.
        return x.to(self.device).clone(memory_format=torch.contiguous_format)

    def _check_stages(self, stages: int | None) -> int:
        if stages is None:
            return self.stages
        if not 0 <= int(stages) <= self.stages:
            raise InputError(f"this model has {self.stages} stages; asked for {stages}")
        return int(stages)

    def _check_codes(self, codes: torch.Tensor) -> torch.Tensor:
        codes = torch.as_tensor(codes)
        if codes.dim() != 2 or codes.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise InputError(f"codes must be an integer tensor of shape (B, n); got {codes.dtype} "
                             f"{tuple(codes.shape)}")
        if codes.shape[1] > self.stages:
            raise InputError(f"this model has {self.stages} stages; codes have {codes.shape[1]}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.options):
            raise InputError(f"code values must be in [0, {self.options})")
        return codes.long()

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
        model, _ = runs.load(runs.resolve_model_dir(path), STORED,
                             lambda config: cls(ModelConfig.from_dict(config)), map_location)
        return model

    def fingerprint(self) -> bytes:
        """16 bytes identifying this exact model: SHA-256 of its config and weights."""
        return runs.fingerprint(self.config.to_dict(), self.state_dict())
