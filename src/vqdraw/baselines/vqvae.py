"""VQ-VAE baseline (van den Oord et al. 2017) as in the VQ-DRAW paper's Figure 2: a grid of
spatial latents with a small codebook, sampled with a *uniform* prior (no PixelCNN).

    image (B, C, 28, 28) --normalise--> conv 4x4/2 -> conv 4x4/2 -> conv 3x3 -> conv 1x1
        -> z_e (B, D, 7, 7) --nearest codebook entry--> codes (B, 7, 7) in [0, C)
        -> z_q (B, D, 7, 7) -> conv 3x3 x2 -> conv-T 4x4/2 -> conv-T 4x4/2 -> (B, C, 28, 28)

Bits per image: a gh x gw grid with codebook size C stores gh*gw*log2(C) bits. For 28x28 MNIST
the grid is 7x7: C = 2 gives 49 bits, C = 4 gives 98 bits. The VQ-DRAW MNIST model stores
10 * log2(64) = 60 bits, between the two, so both are reported.

Vector quantisation uses ``vector_quantize_pytorch.VectorQuantize`` (pinned 1.32.0), configured
as the classic VQ-VAE: nearest-neighbour assignment, straight-through gradient (the rotation
trick is switched off), commitment loss with beta = 0.25, codebook learned by exponential moving
averages (decay 0.99) rather than a codebook loss, k-means initialisation on the first batch and
re-seeding of codes whose EMA usage falls below 2 vectors per batch (with only 2 codes, a dead
code would halve the bit budget).

To share tools with VQ-DRAW, the model exposes the same surface: ``encode(x) -> codes (B, N)``
with N = gh*gw latent positions in raster order, ``decode``, ``reconstruct``,
``sample(n, generator=)``, ``options`` (= C), ``stages`` (= N), ``config.data_shape``,
``config.code_bits``. Loss and reconstruction MSE are measured in the normalised space, like
VQ-DRAW's.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import runs
from ..errors import CheckpointError, ConfigError, InputError
from ..loop import Cadence, DataOrder, Hooks, Progress, adam, run_steps
from ..evaluate.metrics.distortion import psnr_from_mse

STORED = runs.Format("vqdraw-vqvae", 1)  # config.json + model.safetensors, like VQ-DRAW's
FORMAT, FORMAT_VERSION = STORED.name, STORED.version
VQ_LIBRARY = "vector-quantize-pytorch==1.32.0"


@dataclass(frozen=True)
class VQVAEConfig:
    image_shape: tuple[int, int, int] = (1, 28, 28)
    codebook: int = 2
    """C: codebook size; each latent position stores log2(C) bits."""
    latent_dim: int = 16
    """D: dimension of a codebook vector."""
    channels: tuple[int, int] = (32, 64)
    """Channels of the two stride-2 stages (encoder; mirrored by the decoder)."""
    mean: tuple[float, ...] = (0.1307,)
    std: tuple[float, ...] = (0.3081,)
    commitment: float = 0.25
    """beta: weight of the commitment loss |z_e - sg(z_q)|^2."""
    decay: float = 0.99
    """EMA decay of the codebook updates."""
    dead_code_threshold: float = 2.0
    """Re-seed a code when its EMA usage falls below this many vectors per batch (0: never)."""

    def __post_init__(self) -> None:
        c, h, w = self.image_shape
        if h % 4 or w % 4:
            raise ConfigError(f"the VQ-VAE baseline needs image sides divisible by 4, got {h}x{w}")
        if self.codebook < 2:
            raise ConfigError(f"codebook size must be at least 2, got {self.codebook}")
        if len(self.mean) != c or len(self.std) != c:
            raise ConfigError(f"mean and std need {c} values (one per channel)")
        if len(self.channels) != 2:
            raise ConfigError("channels: give the two encoder widths")

    @property
    def data_shape(self) -> tuple[int, int, int]:
        """:attr:`image_shape`, under the name the tools shared with VQ-DRAW read (its model
        config's ``data_shape``); this network takes images only, and its config.json keeps
        ``image_shape``."""
        return tuple(self.image_shape)

    @property
    def grid(self) -> tuple[int, int]:
        _, h, w = self.image_shape
        return h // 4, w // 4

    @property
    def positions(self) -> int:
        gh, gw = self.grid
        return gh * gw

    @property
    def options(self) -> int:
        return self.codebook

    @property
    def stages(self) -> int:
        return self.positions

    @property
    def code_bits(self) -> float:
        return self.positions * math.log2(self.codebook)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "VQVAEConfig":
        d = dict(d)
        for k in ("image_shape", "channels", "mean", "std"):
            if k in d:
                d[k] = tuple(d[k])
        try:
            return cls(**d)
        except TypeError as exc:
            raise ConfigError(f"invalid VQ-VAE config: {exc}") from exc


def _vector_quantize():
    try:
        from vector_quantize_pytorch import VectorQuantize
    except ImportError as exc:  # the optional extra [baselines]
        raise ConfigError('the VQ-VAE baseline needs vector-quantize-pytorch: pip install "vqdraw[baselines]"') from exc
    return VectorQuantize


class VQVAE(nn.Module):
    """A small VQ-VAE with a gh x gw grid of codes from a codebook of size C."""

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        self.config = config
        c = config.image_shape[0]
        c1, c2 = config.channels
        d = config.latent_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(c, c1, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(c1, c2, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(c2, c2, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(c2, d, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(d, c2, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(c2, c2, 3, 1, 1), nn.ReLU(),
            nn.ConvTranspose2d(c2, c1, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(c1, c, 4, 2, 1),
        )
        self.vq = _vector_quantize()(
            dim=d,
            codebook_size=config.codebook,
            decay=config.decay,
            commitment_weight=config.commitment,
            kmeans_init=True,
            kmeans_iters=10,
            threshold_ema_dead_code=config.dead_code_threshold,
            rotation_trick=False,
            accept_image_fmap=True,
        )
        self.register_buffer("mean", torch.tensor(config.mean).view(1, c, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, c, 1, 1), persistent=False)

    # ------------------------------------------------------------------ VQ-DRAW-like surface
    @property
    def options(self) -> int:
        return self.config.codebook

    @property
    def stages(self) -> int:
        return self.config.positions

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return (z * self.std + self.mean).clamp(0.0, 1.0)

    def forward(self, x: torch.Tensor) -> dict:
        """Images in [0, 1] -> {recon_normalised, target, codes (B, N), commit_loss}."""
        x = self._check_images(x)
        target = self.normalize(x)
        quantized, indices, commit = self.vq(self.encoder(target))
        return {"recon": self.decoder(quantized), "target": target, "codes": indices.flatten(1),
                "commit": commit.sum()}

    def loss(self, x: torch.Tensor) -> dict:
        """Training loss: reconstruction MSE (normalised space) + beta * commitment."""
        out = self(x)
        recon = F.mse_loss(out["recon"], out["target"])
        return {"loss": recon + out["commit"], "recon": recon, "commit": out["commit"], "codes": out["codes"]}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] -> codes (B, gh*gw) int64, raster order."""
        with torch.inference_mode():
            return self(x)["codes"]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, gh*gw) -> images (B, C, H, W) in [0, 1]."""
        codes = torch.as_tensor(codes)
        if codes.dim() != 2 or codes.shape[1] != self.stages or codes.is_floating_point():
            raise InputError(f"codes must be an integer tensor of shape (B, {self.stages}); "
                             f"got {codes.dtype} {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.options):
            raise InputError(f"code values must be in [0, {self.options})")
        gh, gw = self.config.grid
        with torch.inference_mode():
            idx = codes.long().to(self.device).view(-1, gh, gw)
            z = self.vq.get_output_from_indices(idx)  # (B, D, gh, gw)
            return self.denormalize(self.decoder(z))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.denormalize(self(x)["recon"])

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode `n` uniformly random code grids (the uniform prior of the paper's Figure 2)."""
        codes = torch.randint(0, self.options, (n, self.stages), generator=generator)
        return self.decode(codes)

    def _check_images(self, x: torch.Tensor) -> torch.Tensor:
        c, h, w = self.config.image_shape
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != (c, h, w):
            raise InputError(f"this model takes images of shape (B, {c}, {h}, {w}); "
                             f"got {tuple(getattr(x, 'shape', ()))}")
        if not x.is_floating_point():
            raise InputError(f"images must be float in [0, 1], got dtype {x.dtype}")
        return x.to(self.device)

    # ------------------------------------------------------------------ persistence
    def describe(self) -> dict:
        return runs.describe(STORED, self.config.to_dict(), {"vq_library": VQ_LIBRARY})

    def save(self, directory: str | Path) -> Path:
        return runs.save(directory, STORED, self.config.to_dict(), self.state_dict(), {"vq_library": VQ_LIBRARY})

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "VQVAE":
        model, _ = runs.load(path, STORED, lambda c: cls(VQVAEConfig.from_dict(c)), map_location,
                             what="VQ-VAE")
        return model.eval()


# ---------------------------------------------------------------------- training
@dataclass(frozen=True)
class VQVAETrainConfig:
    steps: int = 1000
    batch: int = 32
    lr: float = 1e-3
    seed: int = 0
    dataset: str = "mnist-embedded"
    log_every: int = 10

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def evaluate_vqvae(model: VQVAE, images: torch.Tensor, batch: int = 250) -> dict:
    """Reconstruction MSE (normalised space and pixels in [0, 1]), PSNR, codes used."""
    model.eval()
    sq_norm = sq_pix = 0.0
    codes = []
    for chunk in images.split(batch):
        out = model(chunk)
        sq_norm += (out["recon"] - out["target"]).pow(2).flatten(1).mean(1).sum().item()
        sq_pix += (model.denormalize(out["recon"]) - chunk).pow(2).flatten(1).mean(1).sum().item()
        codes.append(out["codes"])
    n = images.shape[0]
    mse = sq_pix / n
    return {"test_mse": sq_norm / n, "test_mse_pixels": mse,
            "test_psnr": psnr_from_mse(mse),
            "test_codes_used": int(torch.cat(codes).unique().numel())}


def train_vqvae(
    model: VQVAE,
    train_set,
    test_set,
    cfg: VQVAETrainConfig,
    run_dir: str | Path | None = None,
    *,
    device: torch.device | str = "cpu",
    progress: bool = False,
    pictures: bool = True,
    overwrite: bool = False,
) -> dict:
    """Train for ``cfg.steps`` steps with Adam on the same data order as VQ-DRAW's ``fit``
    (:mod:`vqdraw.loop`). With `run_dir` (locked for the call; a folder already holding a model
    is refused unless ``overwrite``), writes metrics.jsonl as it goes, then config.json +
    model.safetensors (a loadable model folder), train.json (same layout as a VQ-DRAW run, so
    tools find the dataset) and samples/reconstructions PNGs. Returns {"losses", "final"}."""
    if train_set.data_shape != tuple(model.config.image_shape):
        raise ConfigError(f"dataset {train_set.name!r} has images of shape {train_set.data_shape}, "
                          f"the model takes {tuple(model.config.image_shape)}")
    with contextlib.ExitStack() as stack:
        if run_dir is not None:
            run_dir = Path(run_dir)
            stack.enter_context(runs.RunLock(run_dir))
            runs.clean_debris(run_dir)
            if runs.holds_run(run_dir):
                if not overwrite:
                    raise CheckpointError(f"{run_dir} already holds a model; pass --overwrite to replace it "
                                          "or choose another --run")
                runs.clear_run(run_dir, extra=("samples.png", "reconstructions.png"))
        return _train(model, train_set, test_set, cfg, run_dir, device, progress, pictures)


def _train(model, train_set, test_set, cfg, run_dir, device, progress, pictures) -> dict:
    model.to(device)
    opt = adam(model.parameters(), cfg.lr)
    losses: list[float] = []

    def one_step(step: int, idx: torch.Tensor) -> dict:
        model.train()
        terms = model.loss(train_set.batch(idx, device))
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()
        losses.append(terms["loss"].item())
        return {"loss": losses[-1], "recon": terms["recon"].item(), "commit": terms["commit"].item(),
                "used": int(terms["codes"].unique().numel())}

    log = run_steps(one_step, DataOrder(len(train_set), cfg.batch, cfg.seed), stop=cfg.steps,
                    cadence=Cadence(log_every=cfg.log_every),
                    hooks=Hooks(progress=Progress(cfg.steps, desc="vq-vae", enabled=progress),
                                postfix=lambda r, _: {"loss": f"{r['loss']:.4f}"}, metrics_dir=run_dir))
    test_images = test_set.batch(range(len(test_set)), device)
    final = evaluate_vqvae(model, test_images)
    final["step"] = cfg.steps
    log.append({**log[-1], **final} if log else final)
    if run_dir is not None:
        runs.append_metrics(run_dir, log[-1])
        _write_run(model, cfg, run_dir, test_images, pictures)
    return {"losses": losses, "final": final}


def _write_run(model: VQVAE, cfg: VQVAETrainConfig, run_dir: Path, test_images: torch.Tensor,
               pictures: bool) -> None:
    model.save(run_dir)
    runs.write_train_json(run_dir, cfg.to_dict(), model.config.to_dict(), baseline="vqvae")
    if pictures:
        from ..evaluate import plots

        model.eval()
        g = torch.Generator().manual_seed(0)
        scale = plots._scale(model)
        plots.save_png(plots.grid(model.sample(100, generator=g), ncol=10, scale=scale), run_dir / "samples.png")
        x = test_images[:: max(1, len(test_images) // 50)][:50]  # spread out: files may be sorted by label
        pairs = torch.stack([x.cpu(), model.reconstruct(x).cpu()], 1).flatten(0, 1)
        plots.save_png(plots.grid(pairs, ncol=20, scale=scale), run_dir / "reconstructions.png")


def data_statistics(train_set, limit: int = 5000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of (up to `limit`) training images, for normalisation."""
    x = train_set.batch(range(min(limit, len(train_set))))
    return tuple(x.mean((0, 2, 3)).tolist()), tuple(x.std((0, 2, 3)).clamp_min(1e-3).tolist())


def build_vqvae(train_set, codebook: int = 2, **overrides) -> VQVAE:
    """A fresh VQ-VAE sized for `train_set`, normalised with its statistics."""
    mean, std = data_statistics(train_set)
    cfg = VQVAEConfig(image_shape=train_set.data_shape, codebook=codebook, mean=mean, std=std)
    return VQVAE(replace(cfg, **overrides))
