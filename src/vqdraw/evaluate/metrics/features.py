"""The feature space for sample-quality metrics: a small CNN classifier the project trains itself.

FID and KID are usually computed in the pool3 space of an ImageNet Inception network. That needs
downloaded weights and says little about 28x28 digits. Here the feature extractor is a small
classifier trained on the dataset's own training split (labels required); its penultimate layer
is the feature space:

    image (B, C, H, W) in [0, 1] -> 2x[3x3 conv, ReLU] -> maxpool -> 3x3 conv, ReLU -> maxpool
        -> adaptive avg-pool 4x4 -> linear -> h (B, feature_dim)   <- the features
        -> ReLU -> dropout -> linear -> class logits

The features are taken *before* the ReLU so that no dimension is identically zero: with a few
hundred images per set the covariance matrices then stay full-rank, which keeps the matrix square
root in FID well conditioned. They are then standardised per dimension with the mean and standard
deviation of the training split's features (stored with the weights), so that every dimension
counts alike in FID and KID's kernel k(x, y) = (x.y / d + 1)^3 works at unit scale, as it does
with Inception features.

Trained nets are cached per dataset under ``<data dir>/features/<dataset>/`` (data dir as for the
datasets: ``--data-dir``, else ``$VQDRAW_DATA``, else ``~/.cache/vqdraw``)::

    features.safetensors   the weights
    features.json          the recipe (architecture, steps, seed) and the test accuracy

A cached net is reused only if its recipe matches the one asked for; otherwise it is retrained.
Absolute FID values in this space are not comparable with published (Inception) FIDs; they compare
models evaluated with the same feature net (same dataset and recipe, whose accuracy is reported).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ... import runs
from ...data import DatasetError, Dataset, load_dataset
from ...data.download import default_data_dir
from ...errors import VQDrawError
from ...loop import Cadence, Hooks, run_steps
from ...progress import Progress

STORED = runs.Format("vqdraw-features", 2, key="recipe", config_file="features.json",
                     weights_file="features.safetensors", min_version=2)
FORMAT, FORMAT_VERSION = STORED.name, STORED.version
WEIGHTS_FILE = STORED.weights_file
META_FILE = STORED.config_file


@dataclass(frozen=True)
class FeatureRecipe:
    """Everything that determines a feature net (besides the data): cache key and config."""

    image_shape: tuple[int, int, int] = (1, 28, 28)
    classes: int = 10
    width: int = 32
    feature_dim: int = 128
    steps: int = 1000
    batch: int = 64
    lr: float = 1e-3
    shift: int = 2
    """Random translation of up to this many pixels (training augmentation)."""
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureRecipe":
        d = dict(d)
        d["image_shape"] = tuple(d["image_shape"])
        return cls(**d)


class FeatureNet(nn.Module):
    """A small CNN classifier; :meth:`features` gives its penultimate-layer activations."""

    def __init__(self, recipe: FeatureRecipe):
        super().__init__()
        self.recipe = recipe
        c, _, _ = recipe.image_shape
        w = recipe.width
        self.body = nn.Sequential(
            nn.Conv2d(c, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(2 * w * 16, recipe.feature_dim),
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(0.3), nn.Linear(recipe.feature_dim, recipe.classes))
        # Standardisation of the features, set from the training split after training.
        self.register_buffer("feature_mean", torch.zeros(recipe.feature_dim))
        self.register_buffer("feature_std", torch.ones(recipe.feature_dim))

    @property
    def feature_dim(self) -> int:
        return self.recipe.feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] -> class logits (B, classes)."""
        return self.head(self.body(x * 2.0 - 1.0))

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] -> standardised features (B, feature_dim) float32, CPU."""
        raw = self.raw_features(images, batch)
        return (raw - self.feature_mean.cpu()) / self.feature_std.cpu()

    @torch.no_grad()
    def raw_features(self, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
        """Penultimate-layer activations before standardisation (B, feature_dim), CPU."""
        if images.dim() != 4 or tuple(images.shape[1:]) != tuple(self.recipe.image_shape):
            from ...errors import InputError

            raise InputError(f"the feature net takes images of shape (B, {', '.join(map(str, self.recipe.image_shape))}); "
                             f"got {tuple(images.shape)}")
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = [self.body(chunk.to(device).float() * 2.0 - 1.0).cpu() for chunk in images.split(batch)]
        self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, self.feature_dim)

    @torch.no_grad()
    def accuracy(self, images: torch.Tensor, labels: torch.Tensor, batch: int = 500) -> float:
        self.eval()
        device = next(self.parameters()).device
        correct = 0
        for x, y in zip(images.split(batch), labels.split(batch)):
            correct += (self(x.to(device)).argmax(1).cpu() == y.cpu()).sum().item()
        return correct / max(1, len(labels))


def features_dir(dataset: str, data_dir: str | Path | None = None) -> Path:
    """``<data dir>/features/<dataset>/`` (the dataset name made safe for a folder name)."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset).strip("_") or "dataset"
    return root / "features" / safe


def _shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by a random integer offset in [-max_shift, max_shift] (zero fill)."""
    if max_shift <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])


def train_feature_net(
    train_set: Dataset,
    test_set: Dataset,
    recipe: FeatureRecipe | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> tuple[FeatureNet, dict]:
    """Train a :class:`FeatureNet` on `train_set`; returns it (in eval mode) and a summary dict
    with ``test_accuracy`` and ``train_accuracy`` (on up to 2,000 training images)."""
    if train_set.labels is None or test_set.labels is None:
        raise DatasetError(f"dataset {train_set.name!r} has no labels; the feature net for FID/KID "
                           "is a classifier and needs a labelled dataset")
    classes = int(train_set.labels.max()) + 1
    recipe = recipe or FeatureRecipe()
    if recipe.image_shape != train_set.data_shape or recipe.classes != classes:
        from dataclasses import replace

        recipe = replace(recipe, image_shape=train_set.data_shape, classes=classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        net = FeatureNet(recipe).to(device)
    gen = torch.Generator().manual_seed(recipe.seed + 1)
    labels = torch.from_numpy(train_set.labels)
    opt = torch.optim.Adam(net.parameters(), lr=recipe.lr)

    def draw(step: int) -> torch.Tensor:  # a batch drawn with replacement from the recipe's generator
        return torch.randint(0, len(train_set), (recipe.batch,), generator=gen)

    def one_step(step: int, idx: torch.Tensor) -> dict:
        for g in opt.param_groups:
            g["lr"] = recipe.lr * (0.1 + 0.9 * (1 - step / recipe.steps))  # linear decay to lr/10
        x = _shift(train_set.batch(idx), recipe.shift, gen).to(device)
        loss = F.cross_entropy(net(x), labels[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": float(loss.detach())}

    hooks = Hooks(progress=Progress(recipe.steps, desc="feature net", enabled=progress),
                  postfix=lambda record, _: {"loss": f"{record['loss']:.3f}"})
    net.train()
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global RNG: keep it seeded
        torch.manual_seed(recipe.seed + 2)
        run_steps(one_step, draw, stop=recipe.steps, cadence=Cadence(log_every=None), hooks=hooks)
    net.eval()
    raw = net.raw_features(train_set.batch(range(len(train_set))))
    net.feature_mean.copy_(raw.mean(0))
    net.feature_std.copy_(raw.std(0).clamp_min(1e-6))
    n_train = min(2000, len(train_set))
    summary = {
        "test_accuracy": net.accuracy(test_set.batch(range(len(test_set))), torch.from_numpy(test_set.labels)),
        "train_accuracy": net.accuracy(train_set.batch(range(n_train)), labels[:n_train]),
        "train_size": len(train_set),
        "test_size": len(test_set),
    }
    return net, summary


def save_feature_net(net: FeatureNet, directory: str | Path, dataset: str, summary: dict) -> Path:
    """Write features.safetensors then features.json (the json's presence marks a complete cache)."""
    return runs.save(directory, STORED, net.recipe.to_dict(), net.state_dict(), {"dataset": dataset, **summary})


def read_feature_net(directory: str | Path, map_location: str | torch.device = "cpu") -> tuple[FeatureNet, dict]:
    """Load a cached feature net; returns (net in eval mode, the json metadata)."""
    net, meta = runs.load(directory, STORED, lambda r: FeatureNet(FeatureRecipe.from_dict(r)), map_location,
                          what="feature-net")
    return net.eval(), meta


def load_feature_net(
    dataset: str,
    data_dir: str | Path | None = None,
    *,
    recipe: FeatureRecipe | None = None,
    device: torch.device | str = "cpu",
    retrain: bool = False,
    progress: bool = False,
    train_set: Dataset | None = None,
    test_set: Dataset | None = None,
) -> tuple[FeatureNet, dict]:
    """The feature net of `dataset`: from the cache when its recipe matches, else trained on the
    dataset's training split (and cached). Returns (net, metadata incl. ``test_accuracy``).
    ``train_set``/``test_set``: the splits of `dataset` if the caller has already loaded them."""
    train_set = train_set if train_set is not None else load_dataset(dataset, "train", data_dir)
    recipe = recipe or FeatureRecipe()
    from dataclasses import replace

    classes = int(train_set.labels.max()) + 1 if train_set.labels is not None else recipe.classes
    recipe = replace(recipe, image_shape=train_set.data_shape, classes=classes)
    directory = features_dir(dataset, data_dir)
    if not retrain and (directory / META_FILE).exists():
        try:
            net, meta = read_feature_net(directory, device)
            if net.recipe == recipe:
                return net, meta
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, VQDrawError):
            pass  # unreadable or stale cache: retrain below
    test_set = test_set if test_set is not None else load_dataset(dataset, "test", data_dir)
    net, summary = train_feature_net(train_set, test_set, recipe, device=device, progress=progress)
    save_feature_net(net, directory, dataset, summary)
    return net, {"format": FORMAT, "version": FORMAT_VERSION, "dataset": dataset,
                 "recipe": net.recipe.to_dict(), **summary}
