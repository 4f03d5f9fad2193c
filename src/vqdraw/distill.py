"""A one-pass encoder distilled from VQ-DRAW's greedy encoder (paper §6, third bullet).

Greedy encoding runs the refiner N times and compares K proposals at every stage. Here a small
feed-forward CNN reads the image once and predicts all N codes at the same time:

    image (B, C, H, W) in [0, 1] -> normalise -> [stride-2 conv, ReLU]* -> adaptive pool
        -> linear -> ReLU -> linear -> logits (B, N, K)      codes = argmax over K

It is trained with cross-entropy to reproduce the codes the (greedy) VQ-DRAW encoder chooses for
the training images; those targets are computed once for the whole train split before training
(cheaper on a CPU than re-encoding every batch). The decoder is unchanged: the predicted codes
are decoded by :meth:`VQDraw.decode` (Algorithm 2), so any code it predicts is a valid code.

Optional fine-tuning (``finetune_steps > 0``, off by default): argmax is not differentiable, so
the reconstruction error is back-propagated through the frozen decoder with a straight-through
estimator: the forward pass follows the hard argmax codes exactly; the backward pass uses the
gradient of the softmax-weighted mixture of the K proposals at every stage. The loss is the
mean over stages of the canvas' normalised MSE (eq. 1 with the encoder's choices).

Files, written next to the model (or into a given folder):

    distilled.safetensors   the encoder's weights
    distilled.json          format, encoder config, fingerprint of the VQ-DRAW model it serves,
                            how it was trained and its test metrics
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import CheckpointError, ConfigError, InputError
from .metrics.distortion import psnr_from_mse

WEIGHTS_FILE = "distilled.safetensors"
CONFIG_FILE = "distilled.json"
FORMAT = "vqdraw-distilled"
FORMAT_VERSION = 1
_ATTR = "_distilled_encoder"  # plain attribute on the VQDraw model (not a registered submodule)


@dataclass(frozen=True)
class DistilledConfig:
    """Architecture of the one-pass encoder; stored in distilled.json."""

    image_shape: tuple[int, int, int]
    """(C, H, W) of the model's images."""
    stages: int
    """N: codes predicted per image."""
    options: int
    """K: options per stage."""
    mean: tuple[float, ...]
    """Per-channel normalisation, copied from the VQ-DRAW model."""
    std: tuple[float, ...]
    channels: tuple[int, ...] = (32, 64, 128)
    """Output channels of the stride-2 3x3 convolutions."""
    pool: int = 4
    """Side of the adaptive average pool after the convolutions (28x28 -> 4x4 already)."""
    hidden: int = 512
    """Width of the hidden fully connected layer."""
    dropout: float = 0.1
    """Dropout before the output layer, during training only."""

    def __post_init__(self) -> None:
        if not self.channels or any(int(c) <= 0 for c in self.channels):
            raise ConfigError("distilled encoder: channels must be a non-empty list of positive ints")
        if self.pool < 1 or self.hidden < 1 or not 0 <= self.dropout < 1:
            raise ConfigError("distilled encoder: pool and hidden must be positive, dropout in [0, 1)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DistilledConfig":
        try:
            d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
            return cls(**d)
        except TypeError as exc:
            raise ConfigError(f"invalid distilled encoder config: {exc}") from exc

    @classmethod
    def for_model(cls, model, **overrides) -> "DistilledConfig":
        c = model.config
        return cls(tuple(c.image_shape), c.stages, c.options, tuple(c.mean), tuple(c.std), **overrides)


class DistilledEncoder(nn.Module):
    """Image -> (B, N, K) code logits in one forward pass."""

    def __init__(self, config: DistilledConfig):
        super().__init__()
        self.config = config
        c = config.image_shape[0]
        layers: list[nn.Module] = []
        for out in config.channels:
            layers += [nn.Conv2d(c, out, 3, stride=2, padding=1), nn.ReLU()]
            c = out
        layers.append(nn.AdaptiveAvgPool2d(config.pool))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * config.pool * config.pool, config.hidden),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.stages * config.options),
        )
        self.register_buffer("mean", torch.tensor(config.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] -> logits (B, N, K)."""
        h = self.features((x - self.mean) / self.std)
        return self.head(h).view(x.shape[0], self.config.stages, self.config.options)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> codes (B, N) int64, the argmax of the logits (eval mode, no gradients)."""
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                return self(x).argmax(dim=2)
        finally:
            self.train(was_training)

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path, extra: dict | None = None) -> Path:
        """Write distilled.safetensors then distilled.json into `directory` (each atomically)."""
        from safetensors.torch import save

        from .io import atomic_write_bytes, atomic_write_json

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write_bytes(directory / WEIGHTS_FILE, save(state))
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "encoder": self.config.to_dict(), **(extra or {})}
        atomic_write_json(directory / CONFIG_FILE, meta)
        return directory

    @classmethod
    def load(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> "DistilledEncoder":
        """Read an encoder written by :meth:`save` (its distilled.json is in ``encoder.meta``)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory)
        try:
            meta = json.loads((directory / CONFIG_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{directory / CONFIG_FILE}: unreadable distilled encoder config ({exc})") from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or "encoder" not in meta:
            raise CheckpointError(f"{directory / CONFIG_FILE}: not a vqdraw distilled encoder")
        if meta.get("version", 0) > FORMAT_VERSION:
            raise CheckpointError(f"{directory}: distilled encoder written by a newer vqdraw")
        encoder = cls(DistilledConfig.from_dict(meta["encoder"]))
        try:
            encoder.load_state_dict(load_file(str(directory / WEIGHTS_FILE), device=str(map_location)))
        except (OSError, SafetensorError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{directory / WEIGHTS_FILE}: unreadable distilled weights ({exc})") from exc
        encoder.meta = meta
        return encoder.to(map_location)


# ---------------------------------------------------------------------- use from VQDraw.encode
def attach_distilled(model, encoder: DistilledEncoder) -> None:
    """Make `encoder` the one ``model.encode(x, method="distilled")`` uses (not saved with the model)."""
    if not isinstance(encoder, DistilledEncoder):
        raise InputError(f"expected a DistilledEncoder, got {type(encoder).__name__}")
    _check_fits(model, encoder.config, "the attached encoder")
    object.__setattr__(model, _ATTR, encoder)  # bypass nn.Module registration: not in state_dict


def distilled_for(model) -> DistilledEncoder:
    """The attached encoder, else the one saved in the folder the model was loaded from."""
    encoder = model.__dict__.get(_ATTR)
    if encoder is None:
        source = getattr(model, "source_dir", None)
        if source is None or not (Path(source) / CONFIG_FILE).exists():
            where = f" in {source}" if source is not None else ""
            raise InputError(
                f"no distilled encoder for this model{where}: run `vqdraw distill --model {source or 'M'}` first "
                "(it writes distilled.safetensors into the model folder), or attach one with "
                "model.attach_distilled(encoder)"
            )
        encoder = DistilledEncoder.load(source, map_location=model.device)
        _check_fits(model, encoder.config, str(Path(source) / CONFIG_FILE))
        want = getattr(encoder, "meta", {}).get("model_fingerprint")
        if want is not None and want != weights_fingerprint(model):
            raise CheckpointError(
                f"{Path(source) / CONFIG_FILE}: this distilled encoder was trained for other model weights; "
                "run `vqdraw distill` again"
            )
        object.__setattr__(model, _ATTR, encoder)
    if encoder.mean.device != model.device:
        encoder.to(model.device)
    return encoder


def encode_distilled(model, x: torch.Tensor, stages: int | None = None, return_reconstruction: bool = False):
    """Predicted codes (B, n), or an EncodeResult whose reconstruction and per-stage losses come
    from following those codes with the unchanged decoder (so ``reconstruction == model.decode(codes)``)."""
    return model.encode(x, stages=stages, return_reconstruction=return_reconstruction, encoder=distilled_for(model))


def weights_fingerprint(model) -> str:
    """SHA-256 (hex, 32 digits) of a VQ-DRAW model's config and weights: which model a distilled
    encoder was trained for. (Computed here rather than with ``VQDraw.fingerprint`` so that it
    handles 0-dimensional parameters and stays fixed whatever that method becomes.)"""
    import hashlib

    h = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(tensor.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


def _check_fits(model, cfg: DistilledConfig, what: str) -> None:
    c = model.config
    if (tuple(cfg.image_shape), cfg.stages, cfg.options) != (tuple(c.image_shape), c.stages, c.options):
        raise InputError(
            f"{what} predicts {cfg.stages} codes in [0, {cfg.options}) for {tuple(cfg.image_shape)} images; "
            f"the model has N={c.stages}, K={c.options}, images {tuple(c.image_shape)}"
        )


# ---------------------------------------------------------------------- training
@dataclass
class DistillResult:
    encoder: DistilledEncoder
    out_dir: Path | None
    """Where distilled.safetensors/.json were written (None: not saved)."""
    steps: int
    seconds: float
    train_loss: float
    """Cross-entropy (nats, mean over stages) of the last 50 steps."""
    accuracy: list[float]
    """Per-stage top-1 agreement with the greedy codes on the test images."""
    greedy: dict
    """Test metrics of the greedy codes: mse (normalised, paper units), mse_pixels, psnr."""
    distilled: dict
    """The same metrics for the distilled codes decoded by the VQ-DRAW decoder."""
    history: list[dict] = field(default_factory=list)

    @property
    def mean_accuracy(self) -> float:
        return sum(self.accuracy) / len(self.accuracy) if self.accuracy else float("nan")

    def metrics(self) -> dict:
        return {"accuracy": self.accuracy, "mean_accuracy": self.mean_accuracy,
                "chance": 1 / self.encoder.config.options, "greedy": self.greedy,
                "distilled": self.distilled, "train_loss": self.train_loss, "steps": self.steps,
                "seconds": round(self.seconds, 1)}


def greedy_codes(model, images_of, count: int, batch: int = 250, bar=None) -> torch.Tensor:
    """Greedy codes (count, N) for images ``images_of(range)`` encoded `batch` at a time."""
    out = []
    for start in range(0, count, batch):
        idx = range(start, min(start + batch, count))
        out.append(model.encode(images_of(idx)).cpu())
        if bar is not None:
            bar.update(len(idx))
    return torch.cat(out) if out else torch.zeros((0, model.stages), dtype=torch.long)


def code_metrics(model, images: torch.Tensor, codes: torch.Tensor, batch: int = 250) -> dict:
    """Normalised MSE (paper units), pixel MSE and PSNR of `codes` decoded, against `images`."""
    sq_norm = sq_pix = 0.0
    with torch.inference_mode():
        for x, c in zip(images.split(batch), codes.split(batch)):
            x = x.to(model.device)
            res = model.score(x, c)
            sq_norm += res.losses[:, -1].gather(1, res.codes[:, -1:]).sum().item()
            sq_pix += (res.reconstruction - x).pow(2).flatten(1).mean(1).sum().item()
    n = max(1, images.shape[0])
    mse = sq_pix / n
    return {"mse": sq_norm / n, "mse_pixels": mse, "psnr": psnr_from_mse(mse)}


def distill(
    model,
    train_set,
    test_set,
    steps: int = 2000,
    batch: int = 64,
    lr: float = 1e-3,
    out_dir: str | Path | None = None,
    progress: bool = True,
    *,
    seed: int = 0,
    finetune_steps: int = 0,
    finetune_lr: float | None = None,
    encoder_config: dict | None = None,
    train_limit: int | None = None,
    test_limit: int | None = None,
    save: bool = True,
    meta: dict | None = None,
) -> DistillResult:
    """Train a :class:`DistilledEncoder` to predict `model`'s greedy codes; save and attach it.

    1. Greedy-encode the train split once (targets) and the test split (for evaluation).
    2. `steps` Adam steps of cross-entropy (mean over stages) on batches of `batch` images, in the
       seeded order of :func:`vqdraw.train.batch_indices`.
    3. Optionally `finetune_steps` steps on the reconstruction error through the frozen decoder
       (straight-through argmax; see the module docstring); learning rate `finetune_lr` (lr/10).
    4. Evaluate on the test split, write distilled.* into `out_dir` (default: the folder the model
       was loaded from), and attach the encoder to `model` for ``encode(method="distilled")``.
    """
    from .train import batch_indices

    if steps < 0 or finetune_steps < 0 or batch < 1 or lr <= 0:
        raise ConfigError("distill: steps must be >= 0, batch >= 1 and lr > 0")
    if save:
        out_dir = Path(out_dir) if out_dir is not None else getattr(model, "source_dir", None)
        if out_dir is None:
            raise InputError("distill: the model was not loaded from a folder; give out_dir")
    for s in (train_set, test_set):
        if s.image_shape != tuple(model.config.image_shape):
            raise InputError(f"dataset {s.name!r} has images of shape {s.image_shape}; the model takes "
                             f"{tuple(model.config.image_shape)}")
    device = model.device
    model.eval()
    n_train = len(train_set) if train_limit is None else min(train_limit, len(train_set))
    n_test = len(test_set) if test_limit is None else min(test_limit, len(test_set))
    if n_train == 0 or n_test == 0:
        raise InputError("distill: the train and test splits must not be empty")
    t0 = time.perf_counter()

    bar = _bar(progress, n_train + n_test, "greedy codes", "img")
    train_codes = greedy_codes(model, lambda i: train_set.batch(i, device), n_train, bar=bar)
    test_codes = greedy_codes(model, lambda i: test_set.batch(i, device), n_test, bar=bar)
    if bar is not None:
        bar.close()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = DistilledEncoder(DistilledConfig.for_model(model, **(encoder_config or {}))).to(device)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=lr)
    history: list[dict] = []
    recent: list[float] = []
    bar = _bar(progress, steps, "distil", "step")
    encoder.train()
    for step in range(steps):
        idx = batch_indices(step, batch, n_train, seed)
        x = train_set.batch(idx, device)
        target = train_codes[idx].to(device)
        logits = encoder(x)
        loss = F.cross_entropy(logits.flatten(0, 1), target.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        recent = (recent + [loss.item()])[-50:]
        if (step + 1) % 50 == 0 or step + 1 == steps:
            acc = (logits.argmax(2) == target).float().mean().item()
            history.append({"step": step + 1, "ce": sum(recent) / len(recent), "batch_accuracy": acc})
        if bar is not None:
            bar.update(1)
            if (step + 1) % 10 == 0:
                bar.set_postfix(ce=f"{sum(recent) / len(recent):.3f}", refresh=False)
    if bar is not None:
        bar.close()

    if finetune_steps:
        finetune(model, encoder, train_set, finetune_steps, batch, finetune_lr or lr / 10,
                 n_train=n_train, seed=seed + 1, progress=progress, history=history)

    test_images = test_set.batch(range(n_test), "cpu")
    predicted = torch.cat([encoder.predict(x.to(device)).cpu() for x in test_images.split(250)])
    accuracy = (predicted == test_codes).float().mean(0).tolist()
    result = DistillResult(
        encoder=encoder,
        out_dir=out_dir if save else None,
        steps=steps,
        seconds=time.perf_counter() - t0,
        train_loss=sum(recent) / len(recent) if recent else float("nan"),
        accuracy=accuracy,
        greedy=code_metrics(model, test_images, test_codes),
        distilled=code_metrics(model, test_images, predicted),
        history=history,
    )
    attach_distilled(model, encoder)
    if save:
        encoder.save(out_dir, {
            "model_fingerprint": weights_fingerprint(model),
            "training": {"steps": steps, "batch": batch, "lr": lr, "seed": seed, "finetune_steps": finetune_steps,
                         "train_images": n_train, "test_images": n_test, "dataset": train_set.name, **(meta or {})},
            "metrics": result.metrics(),
        })
    return result


def finetune(model, encoder: DistilledEncoder, train_set, steps: int, batch: int, lr: float, *,
             n_train: int | None = None, seed: int = 1, progress: bool = False,
             history: list | None = None) -> list[float]:
    """Straight-through fine-tuning of `encoder` on the reconstruction error through the frozen
    decoder. Returns the loss of every step (mean over stages of the canvas' normalised MSE)."""
    from .train import batch_indices

    n_train = len(train_set) if n_train is None else n_train
    device = model.device
    frozen = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=lr)
    losses: list[float] = []
    bar = _bar(progress, steps, "fine-tune", "step")
    encoder.train()
    try:
        for step in range(steps):
            x = train_set.batch(batch_indices(step, batch, n_train, seed), device)
            loss = relaxed_reconstruction_loss(model, encoder, x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(mse=f"{losses[-1]:.4f}", refresh=False)
            if history is not None and ((step + 1) % 50 == 0 or step + 1 == steps):
                history.append({"finetune_step": step + 1, "mse": sum(losses[-50:]) / len(losses[-50:])})
    finally:
        for p, r in zip(model.parameters(), frozen):
            p.requires_grad_(r)
        if bar is not None:
            bar.close()
    return losses


def relaxed_reconstruction_loss(model, encoder: DistilledEncoder, x: torch.Tensor) -> torch.Tensor:
    """Mean over stages of the normalised MSE of the canvas when following the encoder's argmax
    codes; gradients reach the logits through a straight-through softmax at every stage."""
    target = model.normalize(x)
    logits = encoder(x)  # (B, N, K)
    soft = logits.softmax(dim=2)
    hard = F.one_hot(soft.argmax(dim=2), soft.shape[2]).to(soft.dtype)
    weights = hard + soft - soft.detach()  # forward: exactly one-hot; backward: softmax gradient
    canvas = torch.zeros_like(target)
    total = target.new_zeros(())
    for stage in range(model.stages):
        proposals = model.propose(canvas, stage)  # (B, K, C, H, W)
        canvas = (weights[:, stage].view(weights.shape[0], -1, *([1] * (target.dim() - 1))) * proposals).sum(1)
        total = total + (canvas - target).pow(2).flatten(1).mean(1).mean()
    return total / model.stages


def _bar(enabled: bool, total: int, desc: str, unit: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)
