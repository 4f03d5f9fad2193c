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

Files, written next to the model (or into a given folder), by :func:`vqdraw.runs.save`:

    distilled.safetensors   the encoder's weights
    distilled.json          format, encoder config, fingerprint of the VQ-DRAW model it serves,
                            how it was trained and its test metrics

The encoder is not part of the model: load it with :func:`load_distilled` and pass it in,
``model.encode(x, encoder=load_distilled(folder, model))``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import runs
from .errors import CheckpointError, ConfigError, InputError
from .loop import DataOrder, Progress, adam, run_steps
from .metrics.distortion import psnr_from_mse

STORED = runs.Format("vqdraw-distilled", 1, key="encoder", config_file="distilled.json",
                     weights_file="distilled.safetensors")
WEIGHTS_FILE = STORED.weights_file
CONFIG_FILE = STORED.config_file
FORMAT, FORMAT_VERSION = STORED.name, STORED.version


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

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] -> codes (B, N) int64, the argmax of the logits (eval
        mode, no gradients). Any float dtype and device; the result is on the encoder's device."""
        x = self._check_images(images)
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                return self(x).argmax(dim=2)
        finally:
            self.train(was_training)

    def _check_images(self, x) -> torch.Tensor:
        shape = tuple(self.config.image_shape)
        if not isinstance(x, torch.Tensor):
            raise InputError(f"images must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or tuple(x.shape[1:]) != shape:
            raise InputError(f"this encoder takes images of shape (B, {', '.join(map(str, shape))}); "
                             f"got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise InputError(f"images must be float in [0, 1], got dtype {x.dtype}")
        x = x.to(self.mean.device, torch.float32)
        if x.numel() and not (bool(x.min() >= 0) and bool(x.max() <= 1)):
            raise InputError("images must be in [0, 1] (got values outside; NaN counts as outside)")
        return x

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path, extra: dict | None = None) -> Path:
        """Write distilled.safetensors then distilled.json into `directory` (each atomically)."""
        return runs.save(directory, STORED, self.config.to_dict(), self.state_dict(), extra)

    @classmethod
    def load(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> "DistilledEncoder":
        """Read an encoder written by :meth:`save` (its distilled.json is in ``encoder.meta``)."""
        encoder, meta = runs.load(directory, STORED, lambda c: cls(DistilledConfig.from_dict(c)),
                                  map_location, what="distilled encoder")
        encoder.meta = meta
        return encoder


def load_distilled(path: str | Path, model=None, map_location: str | torch.device | None = None) -> DistilledEncoder:
    """The distilled encoder stored in a model folder (or a run folder's newest checkpoint).

    With `model`, checks that the encoder was trained for exactly this model (shapes and the
    fingerprint of its weights) and puts it on the model's device.
    """
    folder = Path(path)
    if not (folder / CONFIG_FILE).exists():
        folder = runs.resolve_model_dir(path)
    if not (folder / CONFIG_FILE).exists():
        raise InputError(f"no distilled encoder in {folder}: run `vqdraw distill --model {path}` first "
                         f"(it writes {WEIGHTS_FILE} into the model folder)")
    device = map_location if map_location is not None else (model.device if model is not None else "cpu")
    encoder = DistilledEncoder.load(folder, map_location=device)
    if model is not None:
        check_fits(model, encoder, str(folder / CONFIG_FILE))
        want = encoder.meta.get("model_fingerprint")
        if want is not None and want != model.fingerprint().hex():
            raise CheckpointError(f"{folder / CONFIG_FILE}: this distilled encoder was trained for other "
                                  "model weights; run `vqdraw distill` again")
    return encoder


def check_fits(model, encoder: DistilledEncoder, what: str = "the encoder") -> None:
    """Refuse an encoder whose codes do not fit `model` (image shape, N, K)."""
    cfg, c = encoder.config, model.config
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


def greedy_codes(model, images_of, count: int, batch: int = 250, bar: Progress | None = None) -> torch.Tensor:
    """Greedy codes (count, N) for images ``images_of(range)`` encoded `batch` at a time."""
    out = []
    for start in range(0, count, batch):
        idx = range(start, min(start + batch, count))
        out.append(model.encode(images_of(idx)).cpu())
        if bar is not None:
            bar.update(len(idx))
    return torch.cat(out) if out else torch.zeros((0, model.stages), dtype=torch.long)


def code_metrics(model, images: torch.Tensor, encoder=None, batch: int = 250,
                 bar: Progress | None = None) -> tuple[torch.Tensor, dict]:
    """(codes (B, N), metrics) of encoding `images` greedily, or with `encoder`, then decoding:
    normalised MSE (paper units), pixel MSE and PSNR of the reconstructions."""
    sq_norm = sq_pix = 0.0
    codes = []
    for x in images.split(batch):
        x = x.to(model.device)
        res = model.encode(x, return_reconstruction=True, encoder=encoder)
        sq_norm += res.losses[:, -1].gather(1, res.codes[:, -1:]).sum().item()
        sq_pix += (res.reconstruction - x).pow(2).flatten(1).mean(1).sum().item()
        codes.append(res.codes.cpu())
        if bar is not None:
            bar.update(len(x))
    n = max(1, images.shape[0])
    mse = sq_pix / n
    return torch.cat(codes), {"mse": sq_norm / n, "mse_pixels": mse, "psnr": psnr_from_mse(mse)}


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
    """Train a :class:`DistilledEncoder` to predict `model`'s greedy codes; save it into `out_dir`.

    1. Greedy-encode the train split once (targets) and the test split (for evaluation).
    2. `steps` Adam steps of cross-entropy (mean over stages) on batches of `batch` images, in the
       seeded order of :func:`vqdraw.loop.batch_indices`.
    3. Optionally `finetune_steps` steps on the reconstruction error through the frozen decoder
       (straight-through argmax; see the module docstring); learning rate `finetune_lr` (lr/10).
    4. Evaluate on the test split and write distilled.* into `out_dir` (needed when ``save``; the
       CLI passes the model folder), holding the folder's lock (:class:`vqdraw.runs.RunLock`)
       for the whole call.
    """
    if steps < 0 or finetune_steps < 0 or batch < 1 or lr <= 0:
        raise ConfigError("distill: steps must be >= 0, batch >= 1 and lr > 0")
    if save and out_dir is None:
        raise InputError("distill: give out_dir (the model folder), or save=False")
    for s in (train_set, test_set):
        if s.image_shape != tuple(model.config.image_shape):
            raise InputError(f"dataset {s.name!r} has images of shape {s.image_shape}; the model takes "
                             f"{tuple(model.config.image_shape)}")
    n_train = len(train_set) if train_limit is None else min(train_limit, len(train_set))
    n_test = len(test_set) if test_limit is None else min(test_limit, len(test_set))
    if n_train == 0 or n_test == 0:
        raise InputError("distill: the train and test splits must not be empty")
    if not save:
        return _distill(model, train_set, test_set, steps, batch, lr, None, progress, seed, finetune_steps,
                        finetune_lr, encoder_config, n_train, n_test, meta)
    out_dir = Path(out_dir)
    with runs.RunLock(runs.owner_folder(out_dir)):
        return _distill(model, train_set, test_set, steps, batch, lr, out_dir, progress, seed, finetune_steps,
                        finetune_lr, encoder_config, n_train, n_test, meta)


def _distill(model, train_set, test_set, steps, batch, lr, out_dir, progress, seed, finetune_steps,
             finetune_lr, encoder_config, n_train, n_test, meta) -> DistillResult:
    device = model.device
    model.eval()
    t0 = time.perf_counter()
    bar = Progress(n_train + n_test, desc="greedy codes", unit="img", enabled=progress)
    train_codes = greedy_codes(model, lambda i: train_set.batch(i, device), n_train, bar=bar)
    test_images = test_set.batch(range(n_test), "cpu")
    test_codes, greedy = code_metrics(model, test_images, bar=bar)
    bar.close()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = DistilledEncoder(DistilledConfig.for_model(model, **(encoder_config or {}))).to(device)
    optimizer = adam(encoder.parameters(), lr)
    recent: list[float] = []

    def one_step(step: int, idx: torch.Tensor) -> dict:
        target = train_codes[idx].to(device)
        logits = encoder(train_set.batch(idx, device))
        loss = F.cross_entropy(logits.flatten(0, 1), target.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        recent[:] = (recent + [loss.item()])[-50:]
        accuracy = (logits.detach().argmax(2) == target).float().mean().item()
        return {"ce": sum(recent) / len(recent), "batch_accuracy": accuracy}

    encoder.train()
    history = run_steps(one_step, DataOrder(n_train, batch, seed), stop=steps, log_every=50,
                        progress=Progress(steps, desc="distil", enabled=progress),
                        postfix=lambda r, _: {"ce": f"{r['ce']:.3f}"})

    if finetune_steps:
        finetune(model, encoder, train_set, finetune_steps, batch, finetune_lr or lr / 10,
                 n_train=n_train, seed=seed + 1, progress=progress, history=history)

    predicted, distilled = code_metrics(model, test_images, encoder=encoder)
    accuracy = (predicted == test_codes).float().mean(0).tolist()
    result = DistillResult(
        encoder=encoder,
        out_dir=out_dir,
        steps=steps,
        seconds=time.perf_counter() - t0,
        train_loss=sum(recent) / len(recent) if recent else float("nan"),
        accuracy=accuracy,
        greedy=greedy,
        distilled=distilled,
        history=history,
    )
    if out_dir is not None:
        encoder.save(out_dir, {
            "model_fingerprint": model.fingerprint().hex(),
            "training": {"steps": steps, "batch": batch, "lr": lr, "seed": seed, "finetune_steps": finetune_steps,
                         "train_images": n_train, "test_images": n_test, "dataset": train_set.name, **(meta or {})},
            "metrics": result.metrics(),
        })
    return result


def finetune(model, encoder: DistilledEncoder, train_set, steps: int, batch: int, lr: float, *,
             n_train: int | None = None, seed: int = 1, progress: bool = False,
             history: list | None = None) -> list[float]:
    """Straight-through fine-tuning of `encoder` on the reconstruction error through the frozen
    decoder. Returns the loss of every step (mean over stages of the canvas' normalised MSE);
    every 50 steps ``{"finetune_step", "mse"}`` (mean of the last 50) is added to `history`."""
    n_train = len(train_set) if n_train is None else n_train
    device = model.device
    frozen = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    optimizer = adam(encoder.parameters(), lr)
    losses: list[float] = []

    def one_step(step: int, idx: torch.Tensor) -> dict:
        loss = relaxed_reconstruction_loss(model, encoder, train_set.batch(idx, device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        return {"mse": sum(losses[-50:]) / len(losses[-50:])}

    encoder.train()
    try:
        logged = run_steps(one_step, DataOrder(n_train, batch, seed), stop=steps, log_every=50,
                           progress=Progress(steps, desc="fine-tune", enabled=progress),
                           postfix=lambda r, _: {"mse": f"{losses[-1]:.4f}"})
    finally:
        for p, r in zip(model.parameters(), frozen):
            p.requires_grad_(r)
    if history is not None:
        history += [{"finetune_step": r["step"], "mse": r["mse"]} for r in logged]
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
