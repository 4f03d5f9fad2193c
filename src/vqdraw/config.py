"""Typed configuration: the refiner architecture, the model, training, and the Table 1 presets.

Presets are data. ``PRESETS["mnist"]`` holds the paper's Table 1 column for MNIST together with
the refiner sizes used for 28x28x1 images; every field can be overridden.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field, fields, replace

from .errors import ConfigError
from .validate import check_model_dict, check_train_dict


@dataclass(frozen=True)
class RefinerConfig:
    """Sizes of the refinement network (paper §3.4). One parameterised class builds all of them.

    image -> [stride-2 conv]* -> [3x3 conv]* -> [bottleneck residual block]* -> [stride-2 conv-T]*
          -> [3x3 conv]* -> head conv with K*C channels -> deltas (B, K, C, H, W) * output_scale
    Every convolution except the head is followed by a per-stage channel mask.
    """

    down: tuple[int, ...] = (32, 64)
    """Output channels of the stride-2 downsampling convolutions."""
    down_kernel: int = 3
    """Kernel size of the downsampling convolutions (3 or 5 in the paper's models)."""
    body: tuple[int, ...] = (128, 128, 64)
    """Output channels of the plain 3x3 convolutions at the lowest resolution."""
    res_blocks: int = 0
    """Number of bottleneck residual blocks (3x3 conv, 1x1 expand, 1x1 project) after the body."""
    res_expand: int = 4
    """Expansion factor of the residual blocks' hidden 1x1 layer."""
    up: tuple[int, ...] = (64, 64)
    """Output channels of the stride-2 transposed convolutions (one per downsampling step)."""
    pre_head: tuple[int, ...] = ()
    """Output channels of 3x3 convolutions between upsampling and the head."""
    head_kernel: int = 3
    """Kernel size of the final convolution that emits K*C channels."""
    head_per_stage: bool = False
    """A separate head convolution for each stage (the reference SVHN model does this)."""
    group_norm: bool = False
    """GroupNorm after every ReLU (channels/16 groups, at most 32)."""
    output_scale: float = 0.1
    """Initial value of the learned scale applied to the deltas (residual outputs)."""
    progressive: int = 0
    """Stages per resolution level (0: off): stages 0..p-1 propose deltas at the lowest resolution,
    the next p after one upsampling layer, ..., the rest at full resolution (docs/progressive.md)."""

    def __post_init__(self) -> None:
        if len(self.up) != len(self.down):
            raise ConfigError(
                f"refiner: {len(self.down)} downsampling layers need as many upsampling layers, "
                f"got {len(self.up)}"
            )
        for name in ("down", "body", "up", "pre_head"):
            if any(int(c) <= 0 for c in getattr(self, name)):
                raise ConfigError(f"refiner.{name}: channel counts must be positive")
        if self.progressive < 0:
            raise ConfigError(f"refiner.progressive must be non-negative, got {self.progressive}")
        if self.progressive and not self.up:
            raise ConfigError("refiner.progressive needs upsampling layers (a lower resolution to start from)")


LIKELIHOODS = ("mse", "bernoulli")
"""Names accepted by ``ModelConfig.likelihood`` (see :mod:`vqdraw.likelihood`)."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a VQ-DRAW model; stored as config.json beside the weights."""

    data_shape: tuple[int, ...] = (1, 28, 28)
    """Channels first, then 1-3 spatial sizes: (C, L) sequences, (C, H, W) images, (C, D, H, W) volumes."""
    options: int = 64
    """K: refinement options per stage; each stage stores log2(K) bits."""
    stages: int = 10
    """N: the number of stages, i.e. integers in a full code."""
    segment: int = 10
    """Stages per segment: each segment of this many stages has its own refiner parameters."""
    mean: tuple[float, ...] = (0.1307,)
    """Per-channel mean used to normalise [0, 1] data inside the model (mse likelihood)."""
    std: tuple[float, ...] = (0.3081,)
    """Per-channel std used to normalise [0, 1] data inside the model (mse likelihood)."""
    refiner: RefinerConfig = field(default_factory=RefinerConfig)
    """Architecture of each segment's refinement network."""
    likelihood: str = "mse"
    """How a proposal is scored: 'mse' (the paper's) or 'bernoulli' (logits, for binary data)."""

    def __post_init__(self) -> None:
        shape = tuple(self.data_shape)
        if not 2 <= len(shape) <= 4:
            raise ConfigError(f"data_shape must be (C, L), (C, H, W) or (C, D, H, W); got {shape}")
        if min(shape) <= 0:
            raise ConfigError(f"data_shape must be positive, got {shape}")
        c = shape[0]
        if self.options < 2:
            raise ConfigError(f"options (K) must be at least 2, got {self.options}")
        if self.stages < 1:
            raise ConfigError(f"stages (N) must be at least 1, got {self.stages}")
        if self.segment < 1:
            raise ConfigError(f"segment must be at least 1, got {self.segment}")
        if len(self.mean) != c or len(self.std) != c:
            raise ConfigError(f"mean and std need {c} values (one per channel)")
        if any(s <= 0 for s in self.std):
            raise ConfigError("std values must be positive")
        if self.likelihood not in LIKELIHOODS:
            raise ConfigError(f"unknown likelihood {self.likelihood!r}; known: {', '.join(LIKELIHOODS)}")
        scale = 2 ** len(self.refiner.down)
        if any(n % scale for n in shape[1:]):
            raise ConfigError(
                f"data size {'x'.join(map(str, shape[1:]))} must be divisible by {scale} for "
                f"{len(self.refiner.down)} downsampling layers"
            )

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The data shape (C, H, W) of an image model; another name for :attr:`data_shape`."""
        return tuple(self.data_shape)

    @property
    def rank(self) -> int:
        """Spatial dimensions of the data: 1 (sequences), 2 (images) or 3 (volumes)."""
        return len(self.data_shape) - 1

    @property
    def num_segments(self) -> int:
        return math.ceil(self.stages / self.segment)

    @property
    def code_bits(self) -> float:
        """N * log2(K): the size of one full code in bits."""
        return self.stages * math.log2(self.options)

    def to_dict(self) -> dict:
        """The config as JSON data. Image models with the paper's likelihood keep format 1's keys
        (``image_shape``, no ``likelihood``), so their files and fingerprints are unchanged."""
        d = asdict(self)
        if not self.refiner.progressive:  # absent when off: files and fingerprints as before
            del d["refiner"]["progressive"]
        if self.rank == 2:
            d["image_shape"] = d.pop("data_shape")
        if self.likelihood == "mse":
            del d["likelihood"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        check_model_dict(d, cls)  # untrusted JSON: types, ranges and total size before anything is built
        try:
            d = dict(d)
            if "image_shape" in d:  # format 1's name
                d["data_shape"] = d.pop("image_shape")
            refiner = RefinerConfig(**_tuples(d.pop("refiner", {}), RefinerConfig))
            return cls(refiner=refiner, **_tuples(d, cls))
        except TypeError as exc:
            raise ConfigError(f"invalid model config: {exc}") from exc


ANNEALS = ("linear", "cosine")
"""Shapes of the anneal from ``lr`` to ``lr_final`` (``TrainConfig.anneal``, see :mod:`vqdraw.schedule`)."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train: Table 1's batch, steps and alpha, plus the engineering knobs."""

    steps: int = 50_000
    """Optimizer steps."""
    batch: int = 32
    """Images per optimizer step (the paper's batch size)."""
    micro_batch: int = 0
    """Images per forward/backward pass; gradients are accumulated up to `batch`. 0 = batch."""
    alpha: float = 0.01
    """Weight of the loss over all options, l_all, in eq. 3."""
    lr: float = 1e-3
    """Adam step size (the paper uses a fixed 1e-3)."""
    lr_final: float | None = None
    """If set, anneal the step size linearly to this value by the last step (not in the paper)."""
    grad_checkpoint: bool = False
    """Recompute each segment's activations in the backward pass to save memory."""
    eval_every: int = 100
    """Evaluate the test reconstruction MSE every this many steps."""
    eval_size: int = 500
    """Number of test images in the fixed evaluation subset."""
    save_every: int = 500
    """Write a checkpoint (and pictures) every this many steps."""
    log_every: int = 10
    """Append a line to metrics.jsonl every this many steps."""
    seed: int = 0
    """Seed for initialisation and the data order."""
    dataset: str = "mnist-embedded"
    """Dataset name (see `vqdraw datasets`)."""
    warmup: int = 0
    """Raise the step size linearly from lr/warmup to lr over this many first steps (0: none)."""
    anneal: str = "linear"
    """Shape of the anneal to `lr_final` when it is set: 'linear' or 'cosine'."""
    ema: float = 0.0
    """Decay of an average of the weights used for evaluation, pictures and the saved model (0: off)."""
    time_budget: float | None = None
    """Minutes of wall-clock time: the run ends when they are spent (at most `steps` steps) and
    the anneal is fitted to the step count they allow."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "eval_every", "save_every", "log_every", "eval_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.micro_batch < 0 or self.micro_batch > self.batch:
            raise ConfigError(f"micro_batch must be between 0 and batch ({self.batch})")
        if self.alpha < 0:
            raise ConfigError("alpha must be non-negative")
        if self.lr <= 0:
            raise ConfigError("lr must be positive")
        if self.warmup < 0:
            raise ConfigError(f"warmup must be non-negative, got {self.warmup}")
        if self.anneal not in ANNEALS:
            raise ConfigError(f"unknown anneal {self.anneal!r}; known: {', '.join(ANNEALS)}")
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"ema (the average's decay) must be in [0, 1), got {self.ema}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise ConfigError(f"time_budget must be positive (minutes), got {self.time_budget}")

    @property
    def micro(self) -> int:
        return self.micro_batch or self.batch

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        check_train_dict(d, cls)
        try:
            return cls(**_tuples(d, cls))
        except TypeError as exc:
            raise ConfigError(f"invalid train config: {exc}") from exc


@dataclass(frozen=True)
class Preset:
    """A named experiment: the model and the training run of one Table 1 column."""

    name: str
    model: ModelConfig
    train: TrainConfig
    description: str = ""


_MNIST_REFINER = RefinerConfig(
    down=(32, 64), down_kernel=3, body=(128, 128, 64), up=(64, 64), head_kernel=3, output_scale=0.1
)
_SVHN_REFINER = RefinerConfig(
    down=(64, 128), down_kernel=5, body=(128, 256, 128), up=(128, 128), pre_head=(128,),
    head_kernel=1, head_per_stage=True, group_norm=True, output_scale=0.1,
)
_CIFAR_REFINER = RefinerConfig(
    down=(64, 128), down_kernel=5, body=(256,), res_blocks=6, up=(128, 128), pre_head=(128,),
    head_kernel=5, group_norm=True, output_scale=0.01,
)
_CELEBA_REFINER = RefinerConfig(
    down=(64, 128, 128), down_kernel=5, body=(), res_blocks=6, up=(128, 128, 128),
    head_kernel=5, group_norm=True, output_scale=0.01,
)
_RGB = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "mnist",
            ModelConfig((1, 28, 28), 64, 10, 10, refiner=_MNIST_REFINER),
            TrainConfig(steps=50_000, batch=32, alpha=0.01, dataset="mnist"),
            "Table 1, MNIST: 28x28x1, 60-bit codes",
        ),
        Preset(
            "svhn",
            ModelConfig((3, 32, 32), 64, 20, 5, refiner=_SVHN_REFINER, **_RGB),
            TrainConfig(steps=4_375, batch=512, micro_batch=128, alpha=0.01, dataset="svhn"),
            "Table 1, SVHN: 32x32x3, 120-bit codes",
        ),
        Preset(
            "cifar10",
            ModelConfig((3, 32, 32), 64, 100, 10, refiner=_CIFAR_REFINER, **_RGB),
            TrainConfig(steps=2_175, batch=512, micro_batch=64, alpha=0.01, grad_checkpoint=True,
                        dataset="cifar10"),
            "Table 1, CIFAR-10: 32x32x3, 600-bit codes",
        ),
        Preset(
            "celeba",
            ModelConfig((3, 64, 64), 64, 100, 10, refiner=_CELEBA_REFINER, **_RGB),
            TrainConfig(steps=2_262, batch=512, micro_batch=32, alpha=0.01, grad_checkpoint=True,
                        dataset="celeba"),
            "Table 1, CelebA: 64x64x3, 600-bit codes",
        ),
    ]
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def override(cfg, **changes):
    """`dataclasses.replace` that ignores None values and reports unknown fields clearly."""
    changes = {k: v for k, v in changes.items() if v is not None}
    if isinstance(cfg, ModelConfig) and "image_shape" in changes:  # the older name of data_shape
        changes["data_shape"] = changes.pop("image_shape")
    known = {f.name for f in fields(cfg)}
    unknown = set(changes) - known
    if unknown:
        raise ConfigError(f"unknown {type(cfg).__name__} field(s): {', '.join(sorted(unknown))}")
    return replace(cfg, **changes)


def _tuples(d: dict, cls) -> dict:
    """JSON stores tuples as lists; turn them back for the fields declared as tuples."""
    tuple_fields = {f.name for f in dataclasses.fields(cls) if str(f.type).startswith("tuple")}
    return {k: tuple(v) if k in tuple_fields and isinstance(v, list) else v for k, v in d.items()}
