"""Typed configuration: the refiner architecture, the model, training, and the Table 1 presets.

Every field's range is declared here once (:func:`vqdraw.core.fields.ranged`); the constructors, the
checks of untrusted config.json / train.json (:mod:`vqdraw.core.validate`) and the CLI's flags read it.

Presets are data. ``PRESETS["mnist"]`` holds the paper's Table 1 column for MNIST together with
the refiner sizes used for 28x28x1 images; every field can be overridden.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field, fields, replace

from ..errors import ConfigError
from .fields import check_ranges, ranged
from .modality import Implied, check_config, implied_modality, known_modalities
from .validate import check_model_dict, check_train_dict

# Bounds shared by several fields (and by the CLI's other flags): sanity bounds, far above real use.
MAX_CODE = 65535
"""K, N, sizes and classes: a .vqd header stores them as 16-bit integers."""
MAX_WIDTH = 65536
"""Channels of a refiner layer."""
MAX_STEPS = 10**9
"""Optimizer steps (and step intervals)."""
MAX_BATCH = 65536
"""Items per step."""
MAX_COUNT = 1_000_000
"""Items taken from a dataset."""
MAX_BEAM = 1024
"""Beam width of the encoder (one image's search holds that many canvases at once)."""
MAX_OUTPUT_BYTES = 2**32
"""Most bytes of data (float32) one call of the Python API makes at once, e.g. ``model.sample(n)``."""
BINARIZE = ("none", "threshold", "stochastic")
"""Values of ``TrainConfig.binarize``."""


@dataclass(frozen=True)
class RefinerConfig:
    """Sizes of the refinement network (paper §3.4). One parameterised class builds all of them.

    image -> [stride-2 conv]* -> [3x3 conv]* -> [bottleneck residual block]* -> [stride-2 conv-T]*
          -> [3x3 conv]* -> head conv with K*C channels -> deltas (B, K, C, H, W) * output_scale
    Every convolution except the head is followed by a per-stage channel mask (the paper's text);
    the author's CIFAR-10 and CelebA refiners leave the downsampling convolutions unmasked
    (``mask_down=False``) and feed CIFAR-10's body convolution raw (``raw_body=True``).
    """

    down: tuple[int, ...] = ranged((32, 64), low=1, high=MAX_WIDTH, length=16)
    """Output channels of the stride-2 downsampling convolutions."""
    down_kernel: int = ranged(3, low=1, high=31, odd=True)
    """Kernel size of the downsampling convolutions (3 or 5 in the paper's models)."""
    body: tuple[int, ...] = ranged((128, 128, 64), low=1, high=MAX_WIDTH)
    """Output channels of the plain 3x3 convolutions at the lowest resolution."""
    res_blocks: int = ranged(0, low=0, high=1024)
    """Number of bottleneck residual blocks (3x3 conv, 1x1 expand, 1x1 project) after the body."""
    res_expand: int = ranged(4, low=1, high=64)
    """Expansion factor of the residual blocks' hidden 1x1 layer."""
    up: tuple[int, ...] = ranged((64, 64), low=1, high=MAX_WIDTH, length=16)
    """Output channels of the stride-2 transposed convolutions (one per downsampling step)."""
    pre_head: tuple[int, ...] = ranged((), low=1, high=MAX_WIDTH)
    """Output channels of 3x3 convolutions between upsampling and the head."""
    head_kernel: int = ranged(3, low=1, high=31, odd=True)
    """Kernel size of the final convolution that emits K*C channels."""
    head_per_stage: bool = False
    """A separate head convolution for each stage (the reference SVHN model does this)."""
    group_norm: bool = False
    """GroupNorm after every ReLU."""
    norm_groups: tuple[tuple[int, int], ...] = ()
    """GroupNorm group counts as (channels, groups) pairs; channel counts not listed get
    channels/16 groups (at least 1, at most 32). The presets list the author's counts."""
    mask_down: bool = True
    """A stage mask after each downsampling convolution (the paper's text). False: conv -> ReLU
    [-> GroupNorm], as in the author's CIFAR-10 and CelebA refiners."""
    raw_body: bool = False
    """The body convolutions' masked outputs go on without ReLU and GroupNorm (the author's
    CIFAR-10 refiner feeds its body convolution raw into the residual blocks)."""
    output_scale: float = ranged(0.1, low=-1e6, high=1e6)
    """Initial value of the learned scale applied to the deltas (residual outputs)."""
    progressive: int = ranged(0, low=0, high=MAX_CODE)
    """Stages per resolution level (0: off): stages 0..p-1 propose deltas at the lowest resolution,
    the next p after one upsampling layer, ..., the rest at full resolution (docs/progressive.md)."""
    dilations: tuple[int, ...] = ranged((), low=1, high=MAX_WIDTH)
    """The paper author's character refiner (his TextRefiner in the official release), for
    sequences: set, the network is a 1x1 embedding to ``body[0]`` channels plus a learned
    position embedding, one pre-activation residual block per dilation (ReLU, LayerNorm over
    (channels, length), 3-wide conv with this dilation, mask; 1x1 expand by ``res_expand``, mask;
    1x1 project, mask), then ReLU, LayerNorm, a 1x1 conv to ``pre_head[0]`` channels, ReLU and a
    1x1 head. Needs no ``down``/``up`` and one ``body`` width. Empty: the convolutional refiner."""
    softmax_input: bool = False
    """The refiner reads softmax(logits) * sqrt(V) of a categorical canvas instead of the canvas
    itself (the author's text refiner: "use probabilities and scale to have a closer-to-normal
    distribution")."""

    def __post_init__(self) -> None:
        check_ranges(self, "refiner.")
        if len(self.up) != len(self.down):
            raise ConfigError(
                f"refiner: {len(self.down)} downsampling layers need as many upsampling layers, "
                f"got {len(self.up)}"
            )
        for pair in self.norm_groups:
            if len(pair) != 2 or int(pair[0]) <= 0 or int(pair[1]) <= 0 or int(pair[0]) % int(pair[1]):
                raise ConfigError(f"refiner.norm_groups: {tuple(pair)} is not (channels, groups) with "
                                  "groups dividing channels")
        if self.progressive and not self.up:
            raise ConfigError("refiner.progressive needs upsampling layers (a lower resolution to start from)")
        if self.dilations and (self.down or self.up or len(self.body) != 1 or len(self.pre_head) > 1):
            raise ConfigError("refiner.dilations (the author's text refiner) needs no down/up layers, one body "
                              "width and at most one pre_head width")

    def groups(self, channels: int) -> int:
        """GroupNorm groups over `channels` channels: the listed count, else channels/16 in [1, 32]."""
        listed = dict((int(c), int(g)) for c, g in self.norm_groups)
        return listed.get(channels, max(1, min(32, channels // 16)))


MAX_SAMPLE_RATE = 384_000
"""The highest sample rate an audio model takes (Hz)."""

LIKELIHOODS = ("mse", "bernoulli", "gaussian", "categorical", "discretized-logistic")
"""Names accepted by ``ModelConfig.likelihood`` (see :mod:`vqdraw.core.likelihood`)."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a VQ-DRAW model; stored as config.json beside the weights."""

    data_shape: tuple[int, ...] = ranged((1, 28, 28), low=1, high=MAX_CODE)
    """Channels first, then 1-3 spatial sizes: (C, L) sequences, (C, H, W) images, (C, D, H, W) volumes."""
    options: int = ranged(64, low=2, high=MAX_CODE)
    """K: refinement options per stage; each stage stores log2(K) bits."""
    stages: int = ranged(10, low=1, high=MAX_CODE)
    """N: the number of stages, i.e. integers in a full code."""
    segment: int = ranged(10, low=1, high=MAX_CODE)
    """Stages per segment: each segment of this many stages has its own refiner parameters."""
    mean: tuple[float, ...] = ranged((0.1307,), low=-1e12, high=1e12)
    """Per-channel mean used to normalise [0, 1] data inside the model (mse likelihood)."""
    std: tuple[float, ...] = ranged((0.3081,), low=1e-12, high=1e12)
    """Per-channel std used to normalise [0, 1] data inside the model (mse likelihood)."""
    refiner: RefinerConfig = field(default_factory=RefinerConfig)
    """Architecture of each segment's refinement network."""
    likelihood: str = ranged("mse", choices=LIKELIHOODS)
    """How a proposal is scored: 'mse' (the paper's), 'bernoulli' (logits, binary data), 'gaussian'
    (mean and log-std), 'categorical' (V classes per element), 'discretized-logistic' (8-bit data)."""
    categories: int = ranged(256, low=2, high=MAX_CODE)
    """V, the classes per element of the 'categorical' likelihood (256: 8-bit pixels)."""
    stage_conditioning: bool = True
    """Masks (and per-stage heads) per stage. --no-stage-conditioning: the paper's §3.4 ablation,
    one mask row and one head serve every stage of a segment."""
    residual: bool = True
    """Proposals are canvas + the refiner's outputs. --no-residual: the paper's §3.4 ablation,
    proposals are the outputs themselves."""
    modality: str = ""
    """What the data are: "sequence", "text", "image", "volume" (the one the shape implies when
    left "": by rank, and text for rank 1 with the categorical likelihood; the config records
    it, so ``config.modality`` always names one, and a copy with another shape takes that shape's), "audio" (mono 8-bit mu-law waveforms of shape (1, L), see docs/audio.md),
    "speech" (log-mel spectrogram blocks (1, bands, frames) of mono audio, resynthesised by
    Griffin-Lim; docs/audio.md), or the name of a modality registered with :func:`vqdraw.modalities.register`."""
    sample_rate: int = ranged(0, low=0, high=MAX_SAMPLE_RATE)
    """Samples per second of an audio or speech model's waveforms (0: neither)."""
    modality_options: dict[str, int | float | str | bool] = field(default_factory=dict, hash=False)
    """A registered modality's own settings (:func:`vqdraw.modalities.register`), checked by it: up to
    64 names with numbers, strings or booleans. Empty for the built-in modalities."""

    def __post_init__(self) -> None:
        shape = tuple(self.data_shape)
        if not 2 <= len(shape) <= 4:
            raise ConfigError(f"data_shape must be (C, L), (C, H, W) or (C, D, H, W); got {shape}")
        check_ranges(self)
        c = shape[0]
        if len(self.mean) != c or len(self.std) != c:
            raise ConfigError(f"mean and std need {c} values (one per channel)")
        if isinstance(self.categories, bool) or not isinstance(self.categories, int):
            raise ConfigError(f"categories must be an integer, got {self.categories!r}")
        if self.refiner.dilations and self.rank != 1:
            raise ConfigError("refiner.dilations (the author's text refiner) is for sequences (C, L)")
        if self.refiner.softmax_input and self.likelihood != "categorical":
            raise ConfigError("refiner.softmax_input reads a categorical canvas; the likelihood is "
                              f"{self.likelihood!r}")
        if not self.modality or isinstance(self.modality, Implied):  # none named: the one the shape implies
            object.__setattr__(self, "modality", Implied(implied_modality(shape, self.likelihood)))
        if self.modality not in known_modalities():
            raise ConfigError(f"modality must be one of {', '.join(known_modalities())} (a new one: "
                              f"vqdraw.modalities.register), or \"\" for the one the shape implies; "
                              f"got {self.modality!r}")
        if not isinstance(self.modality_options, dict):
            raise ConfigError(f"modality_options must be a dict, got {type(self.modality_options).__name__}")
        object.__setattr__(self, "modality_options", dict(self.modality_options))  # the config's own copy
        check_config(self, MAX_SAMPLE_RATE)  # the modality's own rules: its shape, rate and settings
        scale = 2 ** len(self.refiner.down)
        if any(n % scale for n in shape[1:]):
            raise ConfigError(
                f"data size {'x'.join(map(str, shape[1:]))} must be divisible by {scale} for "
                f"{len(self.refiner.down)} downsampling layers"
            )

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
        (``image_shape``, no ``likelihood``, no ``categories``), so their files and fingerprints
        are unchanged."""
        d = asdict(self)
        if self.rank == 2:
            d["image_shape"] = d.pop("data_shape")
        if self.likelihood == "mse":
            del d["likelihood"]
        if self.likelihood != "categorical":  # only the categorical likelihood reads it
            del d["categories"]
        # fields added later are written only when set, so older configs keep their bytes
        if d["modality"] == implied_modality(self.data_shape, self.likelihood):
            del d["modality"]  # configs written before it was recorded meant this one: same bytes
        for name, default in _LATER_FIELDS["model"].items():
            if name in d and d[name] == default:
                del d[name]
        for name, default in _LATER_FIELDS["refiner"].items():
            if d["refiner"][name] == default:
                del d["refiner"][name]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        check_model_dict(d, cls)  # untrusted JSON: types, ranges and total size before anything is built
        try:
            d = dict(d)
            if "image_shape" in d:  # format 1's name
                d["data_shape"] = d.pop("image_shape")
            refiner = dict(d.pop("refiner", {}))
            if "norm_groups" in refiner:  # JSON lists of lists
                refiner["norm_groups"] = tuple(tuple(p) for p in refiner["norm_groups"])
            refiner = RefinerConfig(**_tuples(refiner, RefinerConfig))
            return cls(refiner=refiner, **_tuples(d, cls))
        except TypeError as exc:
            raise ConfigError(f"invalid model config: {exc}") from exc


_LATER_FIELDS = {
    "model": {"stage_conditioning": True, "residual": True, "modality": "", "sample_rate": 0, "modality_options": {}},
    "refiner": {"norm_groups": (), "mask_down": True, "raw_body": False, "progressive": 0,
                "dilations": (), "softmax_input": False},
}

ANNEALS = ("linear", "cosine")
"""Shapes of the anneal from ``lr`` to ``lr_final`` (``TrainConfig.anneal``, see :mod:`vqdraw.training.schedule`)."""


MAX_SEED = 2**40 - 1
"""The data order seeds torch with ``seed * 1_000_003 + epoch``, which must fit in 64 bits."""


@dataclass(frozen=True)
class Contrastive:
    """The contrastive term of :meth:`vqdraw.VQDraw.loss` (see ``TrainConfig.contrastive``)."""

    weight: float
    stages: int = 2
    temperature: float = 0.5
    shift: int = 2


@dataclass(frozen=True)
class TrainConfig:
    """How to train: Table 1's batch, steps and alpha, plus the engineering knobs."""

    steps: int = ranged(50_000, low=1, high=MAX_STEPS)
    """Optimizer steps."""
    batch: int = ranged(32, low=1, high=MAX_BATCH)
    """Images per optimizer step (the paper's batch size)."""
    micro_batch: int = ranged(0, low=0, high=MAX_BATCH)
    """Images per forward/backward pass; gradients are accumulated up to `batch`. 0 = batch."""
    alpha: float = ranged(0.01, low=0, high=1e6)
    """Weight of the loss over all options, l_all, in eq. 3."""
    lr: float = ranged(1e-3, above=0, high=1e3)
    """Adam step size (the paper uses a fixed 1e-3)."""
    lr_final: float | None = ranged(None, low=0, high=1e3)
    """If set, anneal the step size linearly to this value: step s of S (1-based) uses
    lr + (lr_final - lr) * s/S, as the author's code does. None: the fixed lr."""
    paper_lr: bool = False
    """The paper's fixed step size lr throughout (ignores lr_final and warmup)."""
    adam_betas: tuple[float, ...] = ranged((0.9, 0.999), low=0, below=1)
    """Adam's betas (PyTorch's default; the presets use the author's 0.9, 0.99)."""
    adam_eps: float = ranged(1e-8, above=0, high=1.0)
    """Adam's epsilon (PyTorch's default; the presets use the author's 1e-5)."""
    epsilon: float = ranged(0.0, low=0, high=1)
    """Ablation (paper §3.3): while training, each choice is replaced by a uniformly random
    option with this probability; the loss terms still use the best option's loss."""
    grad_decay: float = ranged(0.0, low=0, high=1)
    """Ablation (author's --grad-decay): the canvas passed between stages carries (1 - this) of
    its gradient; 1 trains every stage greedily (no gradient through earlier choices)."""
    final_coeff: float = ranged(0.0, low=0, high=1e6)
    """Author's --final-coeff: loss += this * the final stage's chosen loss."""
    final_only: bool = False
    """Ablation (paper §3.3): the chosen-loss term is the final stage's only (plus alpha * all)."""
    contrastive: float = ranged(0.0, low=0, high=1e6)
    """Not in the paper (its open question, §6; docs/representation.md): weight of a contrastive
    term that makes a randomly shifted view of each item choose like the item at the first
    ``contrastive_stages`` stages and unlike the batch's other items (InfoNCE, Oord et al. 2018 /
    SimCLR, Chen et al. 2020, over the stages' choice distributions, as IIC, Ji et al. 2019,
    does over cluster assignments). 0: off (the paper's objective)."""
    contrastive_stages: int = ranged(2, low=1, high=MAX_CODE)
    """The first stages whose choices the contrastive term makes agree across views."""
    contrastive_temperature: float = ranged(0.5, above=0, high=1e3)
    """Temperature of the choice distributions: softmax(-z / t) of each stage's option losses z,
    standardised per item and stage."""
    contrastive_shift: int = ranged(2, low=0, high=64)
    """The second view: each item translated by up to this many elements along every spatial axis
    (zero fill)."""
    active_stages: int = ranged(0, low=0, high=MAX_CODE)
    """Author's --active-stages: train only the first this many stages (0: all)."""
    grad_checkpoint: bool = False
    """Recompute each segment's activations in the backward pass to save memory."""
    eval_every: int = ranged(100, low=1, high=MAX_STEPS)
    """Evaluate the test reconstruction MSE every this many steps."""
    eval_size: int = ranged(500, low=1, high=MAX_COUNT)
    """Number of test images in the fixed evaluation subset."""
    save_every: int = ranged(500, low=1, high=MAX_STEPS)
    """Write a checkpoint (and pictures) every this many steps."""
    log_every: int = ranged(10, low=1, high=MAX_STEPS)
    """Append a line to metrics.jsonl every this many steps."""
    seed: int = ranged(0, low=0, high=MAX_SEED)
    """Seed for initialisation and the data order."""
    dataset: str = "mnist-embedded"
    """Dataset name (see `vqdraw datasets`)."""
    binarize: str = ranged("none", choices=BINARIZE)
    """Binarise the data (for bernoulli models): 'none', 'threshold' (x >= 0.5) or 'stochastic'
    (1 with probability x, drawn afresh each epoch; the test set: one fixed draw)."""
    warmup: int = ranged(0, low=0, high=MAX_STEPS)
    """Raise the step size linearly from lr/warmup to lr over this many first steps (0: none)."""
    anneal: str = ranged("linear", choices=ANNEALS)
    """Shape of the anneal to `lr_final` when it is set: 'linear' or 'cosine'."""
    ema: float = ranged(0.0, low=0, below=1)
    """Decay of an average of the weights used for evaluation, pictures and the saved model (0: off)."""
    time_budget: float | None = ranged(None, above=0, high=1e7)
    """Minutes of wall-clock time for each invocation (each `vqdraw train` or ``fit`` call; a resumed
    run gets them all again): the
    training steps with their periodic evaluations and checkpoints, not loading the data or the
    final evaluation. The run ends when they are spent (at most `steps` steps) and the anneal is
    fitted to the step count they allow."""

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.micro_batch > self.batch:
            raise ConfigError(f"micro_batch must be between 0 and batch ({self.batch})")
        if len(self.adam_betas) != 2:
            raise ConfigError(f"adam_betas must be two numbers in [0, 1), got {tuple(self.adam_betas)}")

    def loss_options(self) -> dict:
        """The keyword arguments of :meth:`vqdraw.VQDraw.loss` beyond alpha: the paper's
        training alternatives (all off by default)."""
        contrastive = None
        if self.contrastive > 0:
            contrastive = Contrastive(self.contrastive, self.contrastive_stages, self.contrastive_temperature,
                                      self.contrastive_shift)
        return {"stages": self.active_stages or None, "epsilon": self.epsilon, "grad_decay": self.grad_decay,
                "final_coeff": self.final_coeff, "final_only": self.final_only, "contrastive": contrastive}

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


# The author's refiners (unixpickle/vq-draw, official-release; docs/fidelity.md): layer sizes,
# GroupNorm group counts, and which convolutions carry stage masks.
_MNIST_REFINER = RefinerConfig(
    down=(32, 64), down_kernel=3, body=(128, 128, 64), up=(64, 64), head_kernel=3, output_scale=0.1
)
_SVHN_REFINER = RefinerConfig(
    down=(64, 128), down_kernel=5, body=(128, 256, 128), up=(128, 128), pre_head=(128,),
    head_kernel=1, head_per_stage=True, group_norm=True, output_scale=0.1,
    norm_groups=((64, 4), (128, 8), (256, 8)),
)
_CIFAR_REFINER = RefinerConfig(
    down=(64, 128), down_kernel=5, body=(256,), res_blocks=6, up=(128, 128), pre_head=(128,),
    head_kernel=5, group_norm=True, output_scale=0.01,
    norm_groups=((64, 8), (128, 8), (256, 8), (1024, 32)), mask_down=False, raw_body=True,
)
_CELEBA_REFINER = RefinerConfig(
    down=(64, 128, 128), down_kernel=5, body=(), res_blocks=6, up=(128, 128, 128),
    head_kernel=5, group_norm=True, output_scale=0.01,
    norm_groups=((64, 4), (128, 8), (512, 16)), mask_down=False,
)
_RGB = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
_AUTHOR_ADAM = dict(adam_betas=(0.9, 0.99), adam_eps=1e-5)  # his code's Adam (run folders from before keep theirs)
# 3-D occupancy grids (docs/volumes.md). The same RefinerConfig builds Conv3d networks for rank-3 data.
# voxels32: the SVHN refiner's layout (two stride-2 convs, a body, two transposed convs, a 1x1 head
# per stage) with about an eighth of its channels and no GroupNorm or full-resolution 3x3 conv,
# because a 32^3 grid has 32x the elements of a 32x32 image and a 3-D convolution costs ~3x a 2-D
# one per element: even so, K=64 proposals over 32^3 voxels make a CPU step slow (docs/volumes.md).
_VOXELS32_REFINER = RefinerConfig(
    down=(16, 32), down_kernel=3, body=(32,), up=(32, 16), head_kernel=1, head_per_stage=True,
    output_scale=0.1,
)
# voxels64: after the paper author's ModelNet run (train_modelnet.py: 64^3 grids, 1 channel,
# Bernoulli/BCE loss, K=64, 20 stages in segments of 5, batch 128, lr 1e-3). His ModelNetRefiner's
# layers are not in the sources we could read, so this refiner is ours: his CelebA refiner's
# pattern (three stride-2 convs down to 8^3, residual blocks, three transposed
# convs, GroupNorm) in Conv3d with 3x3x3 kernels; see docs/volumes.md.
_VOXELS64_REFINER = RefinerConfig(
    down=(32, 64, 128), down_kernel=3, body=(), res_blocks=2, res_expand=2, up=(128, 64, 32),
    pre_head=(32,), head_kernel=3, group_norm=True, output_scale=0.1,
)
# text: the author's character model (train_text.py: sequences of 128 characters, K=64, 50 stages
# in segments of 10, softmax over the vocabulary) with his TextRefiner of the official release:
# softmax(canvas) * sqrt(V) -> 1x1 embedding to 128 channels + a learned position embedding, twelve
# pre-activation residual blocks with LayerNorm and dilations 1..32 twice, a 1x1 tail. Ours differs
# in one way (docs/text.md): the canvas and the head are the categorical likelihood's factorised
# features (16 per character, a learned map to the V logits), not V logits per character.
_TEXT_REFINER = RefinerConfig(
    down=(), body=(128,), res_blocks=0, res_expand=4, up=(), pre_head=(128,), head_kernel=1,
    output_scale=0.1, dilations=(1, 2, 4, 8, 16, 32) * 2, softmax_input=True,
)
# audio: the text refiner's pattern (1x1 embedding, position embedding, pre-activation residual
# blocks with dilated 3-wide Conv1d, LayerNorm) at CPU size, over clips of 2048 mu-law samples
# (0.256 s at 8 kHz) with the discretised logistic over the 256 mu-law levels (docs/audio.md).
_AUDIO_REFINER = RefinerConfig(
    down=(), body=(16,), res_blocks=0, res_expand=2, up=(), pre_head=(16,), head_kernel=1,
    output_scale=0.1, dilations=(1, 2, 4, 8, 16, 32, 64),
)
# speech: VQ-DRAW over log-mel spectrograms, where it is strongest (an image-like tensor), with the
# waveform rebuilt by Griffin-Lim (docs/audio.md: the representation won on measured STOI). Blocks of
# 40 mel bands x 16 frames (128 ms at 8 kHz), the mnist-10min refiner, 20 stages of K=64: 120 bits a
# block = 938 bit/s; the first 10 stages are a 469 bit/s code.
# text-cpu: the same refiner at a size a CPU trains in minutes to hours. A step's time is dominated by
# the categorical option losses (B x K x L x 256 logits per stage), not the refiner, so the refiner
# is shrunk (64 channels, five residual blocks with dilations 1..16, expansion 2: 0.37 M parameters)
# and the sequence is 32 characters with 10 stages (60-bit codes, 1.875 bits per character).
_TEXT_CPU_REFINER = replace(_TEXT_REFINER, body=(64,), pre_head=(64,), res_expand=2, dilations=(1, 2, 4, 8, 16))
_OCCUPANCY = dict(mean=(0.5,), std=(0.5,), likelihood="bernoulli")  # mean/std unused by bernoulli

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "mnist",
            ModelConfig((1, 28, 28), 64, 10, 10, refiner=_MNIST_REFINER),
            TrainConfig(steps=50_000, batch=32, alpha=0.01, lr_final=0.0, dataset="mnist", **_AUTHOR_ADAM),
            "Table 1, MNIST: 28x28x1, 60-bit codes",
        ),
        Preset(
            "mnist-10min",
            ModelConfig((1, 28, 28), 64, 10, 10, refiner=replace(_MNIST_REFINER, progressive=2)),
            TrainConfig(steps=5_000, batch=32, alpha=0.01, lr=2e-3, ema=0.99, time_budget=10.0,
                        dataset="mnist-embedded"),
            "the mnist model for ten CPU minutes: progressive refiner, lr 2e-3, EMA (README, docs/progressive.md)",
        ),
        Preset(
            "fashion",
            ModelConfig((1, 28, 28), 64, 10, 10, refiner=replace(_MNIST_REFINER, progressive=2)),
            TrainConfig(steps=200_000, batch=32, alpha=0.01, lr=2e-3, lr_final=0.0, anneal="cosine", warmup=100,
                        ema=0.995, eval_every=1000, save_every=1000, time_budget=125.0, dataset="fashion-mnist"),
            "Fashion-MNIST 28x28x1, 60-bit codes: the mnist-10min model for 125 CPU minutes, cosine anneal "
            "(pretrained:fashion)",
        ),
        Preset(
            "svhn",
            ModelConfig((3, 32, 32), 64, 20, 5, refiner=_SVHN_REFINER, **_RGB),
            TrainConfig(steps=4_375, batch=512, micro_batch=128, alpha=0.01, lr_final=0.0, dataset="svhn",
                        **_AUTHOR_ADAM),
            "Table 1, SVHN: 32x32x3, 120-bit codes",
        ),
        Preset(
            "cifar10",
            ModelConfig((3, 32, 32), 64, 100, 10, refiner=_CIFAR_REFINER, **_RGB),
            TrainConfig(steps=2_175, batch=512, micro_batch=64, alpha=0.01, grad_checkpoint=True,
                        dataset="cifar10", **_AUTHOR_ADAM),
            "Table 1, CIFAR-10: 32x32x3, 600-bit codes",
        ),
        Preset(
            "celeba",
            ModelConfig((3, 64, 64), 64, 100, 10, refiner=_CELEBA_REFINER, **_RGB),
            TrainConfig(steps=2_262, batch=512, micro_batch=32, alpha=0.01, grad_checkpoint=True,
                        dataset="celeba", **_AUTHOR_ADAM),
            "Table 1, CelebA: 64x64x3, 600-bit codes",
        ),
        Preset(
            "voxels32",
            ModelConfig((1, 32, 32, 32), 64, 20, 5, refiner=_VOXELS32_REFINER, **_OCCUPANCY),
            TrainConfig(steps=5_000, batch=32, micro_batch=8, alpha=0.01, eval_size=100, dataset="voxels:grids"),
            "3-D occupancy grids 32x32x32, Bernoulli, 120-bit codes; CPU-sized (docs/volumes.md)",
        ),
        Preset(
            "voxels64",
            ModelConfig((1, 64, 64, 64), 64, 20, 5, refiner=_VOXELS64_REFINER, **_OCCUPANCY),
            TrainConfig(steps=50_000, batch=128, micro_batch=8, alpha=0.01, grad_checkpoint=True,
                        eval_size=100, dataset="voxels:modelnet64"),
            "3-D occupancy grids 64x64x64 after the author's ModelNet model, Bernoulli, 120-bit codes",
        ),
        Preset(
            "text",
            ModelConfig((1, 128), 64, 50, 10, mean=(0.5,), std=(0.5,), refiner=_TEXT_REFINER,
                        likelihood="categorical", categories=256),
            TrainConfig(steps=20_000, batch=32, alpha=0.01, eval_size=200, dataset="text-embedded"),
            "characters: 128 per sequence, 256-character vocabulary, categorical, 300-bit codes (docs/text.md)",
        ),
        Preset(
            "text-cpu",
            ModelConfig((1, 32), 64, 10, 10, mean=(0.5,), std=(0.5,), refiner=_TEXT_CPU_REFINER,
                        likelihood="categorical", categories=256),
            TrainConfig(steps=200_000, batch=16, alpha=0.01, lr=2e-3, lr_final=0.0, anneal="cosine", warmup=200,
                        ema=0.995, eval_size=500, time_budget=10.0, dataset="text-embedded"),
            "characters for a CPU: 32 per sequence, a small refiner, 60-bit codes = 1.875 bits per "
            "character; ten CPU minutes (docs/text.md)",
        ),
        Preset(
            "speech",
            ModelConfig((1, 40, 16), 64, 20, 10, mean=(0.515,), std=(0.205,),
                        refiner=replace(_MNIST_REFINER, progressive=2), modality="speech", sample_rate=8000),
            TrainConfig(steps=200_000, batch=32, alpha=0.01, lr=2e-3, lr_final=0.0, anneal="cosine", warmup=100,
                        ema=0.995, eval_size=687, eval_every=1000, save_every=1000, time_budget=120.0,
                        dataset="asterisk-en"),
            "speech as 40-band log-mel blocks of 128 ms at 8 kHz, Griffin-Lim back to a waveform, 120-bit "
            "codes = 938 bit/s (pretrained:speech, docs/audio.md)",
        ),
        Preset(
            "audio",
            ModelConfig((1, 1024), 32, 16, 8, mean=(0.5,), std=(0.25,), refiner=_AUDIO_REFINER,
                        likelihood="discretized-logistic", modality="audio", sample_rate=8000),
            TrainConfig(steps=5_000, batch=4, alpha=0.01, lr=3e-3, eval_size=32, eval_every=100, save_every=100,
                        log_every=10, time_budget=10.0, dataset="asterisk-en"),
            "speech as a waveform: 1024-sample mu-law clips at 8 kHz, discretised logistic, 80-bit codes = "
            "625 bit/s; ten CPU minutes (docs/audio.md; the speech preset is the one that is intelligible)",
        ),
    ]
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]


DISTILLED_KINDS = ("independent", "autoregressive")
"""The distilled encoders :mod:`vqdraw.training.distill` builds."""


@dataclass(frozen=True)
class DistillConfig:
    """How a distilled encoder is trained (:func:`vqdraw.training.distill.distill`); ranges declared
    once, shared with the ``vqdraw distill`` flags."""

    steps: int = ranged(2000, low=0, high=MAX_STEPS)
    """Training steps: cross-entropy on the greedy codes."""
    batch: int = ranged(64, low=1, high=MAX_BATCH)
    """Images per step."""
    lr: float = ranged(1e-3, above=0, high=1e3)
    """Adam step size."""
    seed: int = ranged(0, low=0, high=MAX_SEED)
    """Initialisation, data order and the random codes."""
    kind: str = ranged("autoregressive", choices=DISTILLED_KINDS)
    """autoregressive: code i from the image and the codes < i (a GRU over stages); independent:
    all codes at once from the image."""
    prior_fraction: float = ranged(0.5, low=0, high=0.95)
    """Share of every batch that is decoded uniformly random codes labelled with those codes
    (0: train images only)."""
    prior_images: int | None = ranged(None, low=1, high=MAX_COUNT)
    """Random codes decoded once for that pool (default: as many as train images)."""
    segments: int | None = ranged(None, low=1, high=MAX_CODE)
    """Distil segment by segment, this many stages each: before each segment the train images are
    labelled again with the encoder's own codes up to it and the greedy continuation from there;
    the steps are split over the segments (default: one round)."""
    finetune_steps: int = ranged(0, low=0, high=MAX_STEPS)
    """Extra steps on the reconstruction error through the frozen decoder (straight-through
    argmax; 0: none)."""
    finetune_lr: float | None = ranged(None, above=0, high=1e3)
    """Step size of those steps (default: lr / 10)."""
    train_images: int | None = ranged(None, low=1, high=MAX_COUNT)
    """Use only the first n training images."""
    test_images: int | None = ranged(None, low=1, high=MAX_COUNT)
    """Evaluate on only the first n test images."""

    def __post_init__(self):
        check_ranges(self, "distill: ")


def override(cfg, **changes):
    """`dataclasses.replace` that ignores None values and reports unknown fields clearly."""
    changes = {k: v for k, v in changes.items() if v is not None}
    known = {f.name for f in fields(cfg)}
    unknown = set(changes) - known
    if unknown:
        raise ConfigError(f"unknown {type(cfg).__name__} field(s): {', '.join(sorted(unknown))}")
    return replace(cfg, **changes)


def _tuples(d: dict, cls) -> dict:
    """JSON stores tuples as lists; turn them back for the fields declared as tuples."""
    tuple_fields = {f.name for f in dataclasses.fields(cls) if str(f.type).startswith("tuple")}
    return {k: tuple(v) if k in tuple_fields and isinstance(v, list) else v for k, v in d.items()}
