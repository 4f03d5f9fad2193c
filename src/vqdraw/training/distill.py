"""Encoders distilled from VQ-DRAW's greedy encoder (paper §6, third bullet).

Greedy encoding runs the refiner N times and compares K proposals at every stage. A distilled
encoder reads the image with a small network and predicts the codes directly; the decoder is
unchanged, so any code it predicts is a valid code for :meth:`VQDraw.decode`. Two kinds:

``independent``: a feed-forward CNN predicts all N codes at once, each from the image alone::

    data (B, C, *S) in [0, 1] -> normalise (one-hot: categorical) -> [stride-2 conv, ReLU]*
        -> adaptive pool
        -> linear -> ReLU -> linear -> logits (B, N, K)      codes = argmax over K

``autoregressive`` (the default): code i is predicted from the image *and the codes < i*, since
each greedy code depends on the canvas the earlier codes drew. The same CNN gives a grid of
image features (tokens) and a pooled summary; a GRU runs over the stages; at stage i its input
is the embedding of code i-1 (a start symbol at stage 0) plus an embedding of i plus the
summary, its state attends over the image tokens, and a small MLP of (state, attended
features) gives the K logits of code i::

    h_i = GRU(h_{i-1}, emb(c_{i-1}) + stage(i) + summary),  h_-1 = tanh(W summary)
    logits_i = MLP([h_i, attention(h_i, tokens)])

In training the GRU reads the target codes (teacher forcing: all stages in one call); at
inference it reads its own argmax codes, one stage at a time (a tiny state per stage, far
cheaper than a refiner pass). Feeding the free-running codes back as teacher-forced inputs
gives the free-running logits again (tested).

Training data (cross-entropy, mean over stages):

* real images labelled with the greedy codes, computed once before training;
* uniform-prior samples: random codes decoded by the model, labelled with those codes (an exact
  code of the sampled image, so labels are free and unlimited; ``prior_fraction`` of every
  batch, from a pool of ``prior_images`` decoded once);
* segment-wise distillation (``segments=S``, the paper's "distill segments of the encoding
  process"): training runs in rounds, one per segment of S stages. Before round r the real
  images are labelled again: the encoder's own codes for the stages before segment r, then the
  greedy encoder's continuation *from the canvas those codes drew*. Each segment thus learns
  to continue what the already distilled segments actually produce, instead of the greedy
  prefix it will not reproduce exactly.

Optional fine-tuning (``finetune_steps > 0``, off by default): argmax is not differentiable, so
the reconstruction error is back-propagated through the frozen decoder with a straight-through
estimator: the forward pass follows the hard argmax codes exactly; the backward pass uses the
gradient of the softmax-weighted mixture of the K proposals at every stage. The loss is the
mean over stages of the likelihood's loss of the canvas (eq. 1 with the encoder's choices).
Sequences, images and volumes (convolutions of the data's rank) and every likelihood are served.

Files, written next to the model (or into a given folder), by :func:`vqdraw.runs.save`:

    distilled.safetensors   the encoder's weights
    distilled.json          format (version 3: the config's shape is ``data_shape``; versions 1
                            and 2 wrote ``image_shape``, still read; version 1 folders hold no
                            ``kind`` and load as ``independent``), encoder config,
                            fingerprint of the VQ-DRAW model it serves, how it was trained and
                            its test metrics

The encoder is not part of the model: load it with :func:`load_distilled` and pass it in,
``model.encode(x, encoder=load_distilled(folder, model))``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import runs
from ..core import stageloop
from ..core.config import DISTILLED_KINDS as KINDS
from ..core.config import DistillConfig, override
from ..errors import CheckpointError, ConfigError, InputError
from ..core.layers import conv_classes
from ..loop import DataOrder, Hooks, Progress, adam, run_steps
from ..evaluate.metrics.distortion import psnr_from_mse

STORED = runs.Format("vqdraw-distilled", 3, key="encoder", config_file="distilled.json",
                     weights_file="distilled.safetensors")
WEIGHTS_FILE = STORED.weights_file
CONFIG_FILE = STORED.config_file
FORMAT, FORMAT_VERSION = STORED.name, STORED.version
MAX_PARAMETERS = 2**26
"""Most parameters a distilled encoder may have (256 MiB of float32; the presets' need well under
1%): checked before one is built (:func:`check_size`), whatever a distilled.json declares."""
MAX_CONVOLUTIONS = 32
"""Most stride-2 convolutions a distilled encoder may declare (16 already halve 65535 to 1)."""
_INTEGER_FIELDS = (("stages", 1, 65535), ("options", 2, 65535), ("pool", 1, 256), ("hidden", 1, 2**20),
                   ("layers", 1, 2**16), ("heads", 0, 2**20), ("categories", 0, 65535))


def _whole(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


@dataclass(frozen=True)
class DistilledConfig:
    """Architecture of a distilled encoder; stored in distilled.json."""

    data_shape: tuple[int, ...]
    """The model's data shape: (C, L) sequences, (C, H, W) images or (C, D, H, W) volumes."""
    stages: int
    """N: codes predicted per image."""
    options: int
    """K: options per stage."""
    mean: tuple[float, ...]
    """Per-channel normalisation, copied from the VQ-DRAW model."""
    std: tuple[float, ...]
    kind: str = "independent"
    """'independent' (all codes from the image at once) or 'autoregressive' (code i also from
    the codes < i). Folders of format version 1 have no kind: they are independent."""
    channels: tuple[int, ...] = (32, 64, 128)
    """Output channels of the stride-2 3x3 convolutions."""
    pool: int = 4
    """Side of the adaptive average pool after the convolutions (28x28 -> 4x4 already)."""
    hidden: int = 512
    """Width of the hidden layer (independent: the fully connected layer; autoregressive: the
    GRU state, embeddings and attention)."""
    dropout: float = 0.1
    """Dropout before the output layer, during training only."""
    layers: int = 1
    """Autoregressive: GRU layers."""
    heads: int = 4
    """Autoregressive: attention heads over the image tokens (0: no attention)."""
    categories: int = 0
    """V > 0: the data are classes k / (V - 1) (a categorical model), read one-hot."""

    def __post_init__(self) -> None:
        for name in ("data_shape", "mean", "std", "channels"):  # lists (JSON, callers) read as tuples
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if not isinstance(self.data_shape, tuple) or not 2 <= len(self.data_shape) <= 4 \
                or not all(_whole(n, 1, 65535) for n in self.data_shape):
            raise ConfigError(f"distilled encoder: data_shape must be (C, L), (C, H, W) or (C, D, H, W) of "
                              f"whole numbers in 1..65535, got {self.data_shape!r}")
        for name, low, high in _INTEGER_FIELDS:
            if not _whole(getattr(self, name), low, high):
                raise ConfigError(f"distilled encoder: {name} must be a whole number in {low}..{high}, "
                                  f"got {getattr(self, name)!r}")
        c = self.data_shape[0]
        for name in ("mean", "std"):
            values = getattr(self, name)
            if not isinstance(values, tuple) or len(values) != c or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
                raise ConfigError(f"distilled encoder: {name} needs {c} finite numbers (one per channel), "
                                  f"got {values!r}")
        if any(v <= 0 for v in self.std):
            raise ConfigError(f"distilled encoder: std must be positive, got {self.std!r}")
        if not isinstance(self.channels, tuple) or not 1 <= len(self.channels) <= MAX_CONVOLUTIONS \
                or not all(_whole(n, 1, 65535) for n in self.channels):
            raise ConfigError(f"distilled encoder: channels must be 1..{MAX_CONVOLUTIONS} whole numbers in "
                              f"1..65535, got {self.channels!r}")
        if self.kind not in KINDS:
            raise ConfigError(f"distilled encoder: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not isinstance(self.dropout, (int, float)) or isinstance(self.dropout, bool) or not 0 <= self.dropout < 1:
            raise ConfigError(f"distilled encoder: dropout must be in [0, 1), got {self.dropout!r}")
        if self.heads and self.hidden % self.heads:
            raise ConfigError(f"distilled encoder: heads ({self.heads}) must divide hidden ({self.hidden})")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DistilledConfig":
        try:
            d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
            if "image_shape" in d and "data_shape" not in d:  # the name format versions 1 and 2 wrote
                d["data_shape"] = d.pop("image_shape")
            return cls(**d)
        except TypeError as exc:
            raise ConfigError(f"invalid distilled encoder config: {exc}") from exc

    @classmethod
    def for_model(cls, model, kind: str = "independent", **overrides) -> "DistilledConfig":
        c = model.config
        if kind == "autoregressive":
            overrides = {"hidden": 128, **overrides}
        if c.likelihood == "categorical":
            overrides = {"categories": c.categories, **overrides}
        return cls(tuple(c.data_shape), c.stages, c.options, tuple(c.mean), tuple(c.std), kind=kind,
                   **overrides)

    @property
    def rank(self) -> int:
        """Spatial dimensions of the data: 1, 2 or 3."""
        return len(self.data_shape) - 1


class _Encoder(nn.Module):
    """What both kinds share: the normalisation, input checks, predict and persistence."""

    def __init__(self, config: DistilledConfig):
        super().__init__()
        self.config = config
        ones = (1,) * config.rank
        self.register_buffer("mean", torch.tensor(config.mean).view(1, -1, *ones), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, -1, *ones), persistent=False)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        v = self.config.categories
        if v:  # classes k / (V - 1) -> one-hot (B, C*V, *S)
            classes = torch.round(x * (v - 1)).long().clamp(0, v - 1)
            return self.features(F.one_hot(classes, v).movedim(-1, 2).flatten(1, 2).to(x.dtype))
        return self.features((x - self.mean) / self.std)

    def logits(self, x: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        """Data (B, C, *S) in [0, 1] -> logits (B, N, K). `codes` (B, N): the codes the
        autoregressive kind reads (teacher forcing); None: its own argmax codes."""
        raise NotImplementedError

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Data (B, C, *S) in [0, 1] -> codes (B, N) int64, the argmax codes (eval mode, no
        gradients). Any float dtype and device; the result is on the encoder's device."""
        x = self._check_images(images)
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                return self.logits(x).argmax(dim=2)
        finally:
            self.train(was_training)

    def _check_images(self, x) -> torch.Tensor:
        """The library's one check of data (:func:`vqdraw.core.inputs.check_data`, the wording
        model.encode uses): (B, *data_shape), float, finite, in [0, 1] -> float32 on the encoder's device."""
        from ..core.inputs import check_data

        return check_data(self.config, x, self.mean.device)

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path, extra: dict | None = None) -> Path:
        """Write distilled.safetensors then distilled.json into `directory` (each atomically)."""
        return runs.save(directory, STORED, self.config.to_dict(), self.state_dict(), extra)

    @classmethod
    def load(cls, directory: str | Path, map_location: str | torch.device = "cpu", model=None) -> "_Encoder":
        """Read an encoder written by :meth:`save`, of either kind (its distilled.json is in
        ``encoder.meta``). With ``model``, a config that does not fit it is refused before the
        encoder is built."""
        where = Path(directory) / CONFIG_FILE

        def build(stored: dict) -> _Encoder:  # checked against the model and sized before it is built
            try:
                config = DistilledConfig.from_dict(stored)
                if model is not None:
                    _check_config_fits(model, config, str(where))
                return build_encoder(config)  # sized first (check_size)
            except ConfigError as exc:
                raise CheckpointError(f"{where}: {exc}") from None

        encoder, meta = runs.load(directory, STORED, build, map_location, what="distilled encoder")
        if not isinstance(encoder, cls):
            raise CheckpointError(f"{Path(directory) / CONFIG_FILE}: a {encoder.config.kind} encoder, "
                                  f"not a {cls.__name__}")
        encoder.meta = meta
        return encoder


def _conv_stack(config: DistilledConfig) -> tuple[nn.Sequential, int]:
    """Stride-2 convolutions of the data's rank, then an adaptive pool: (features, channels)."""
    conv = conv_classes(config.rank)[0]
    c = config.data_shape[0] * (config.categories or 1)
    layers: list[nn.Module] = []
    for out in config.channels:
        layers += [conv(c, out, 3, stride=2, padding=1), nn.ReLU()]
        c = out
    layers.append((nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)[config.rank - 1](config.pool))
    return nn.Sequential(*layers), c


class DistilledEncoder(_Encoder):
    """The independent kind: image -> (B, N, K) code logits in one forward pass."""

    def __init__(self, config: DistilledConfig):
        super().__init__(config)
        self.features, c = _conv_stack(config)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * config.pool ** config.rank, config.hidden),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.stages * config.options),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Data (B, C, *S) in [0, 1] -> logits (B, N, K)."""
        return self.head(self._features(x)).view(x.shape[0], self.config.stages, self.config.options)

    def logits(self, x: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        return self(x)  # the codes play no part


class TokenAttention(nn.Module):
    """Multi-head attention of GRU states over the image tokens. The tokens' keys and values are
    computed once per image (:meth:`memory`), not once per stage."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key_value = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def _split(self, t: torch.Tensor) -> torch.Tensor:  # (B, L, H) -> (B, heads, L, H / heads)
        return t.view(t.shape[0], t.shape[1], self.heads, -1).transpose(1, 2)

    def memory(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.key_value(tokens).chunk(2, dim=2)
        return self._split(keys), self._split(values)

    def forward(self, states: torch.Tensor, memory: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """States (B, n, H) -> what they read from the tokens, (B, n, H)."""
        read = F.scaled_dot_product_attention(self._split(self.query(states)), *memory)
        return self.out(read.transpose(1, 2).flatten(2))


class AutoregressiveEncoder(_Encoder):
    """The autoregressive kind: code i from the image and codes < i (see the module docstring)."""

    def __init__(self, config: DistilledConfig):
        super().__init__(config)
        h, k, n = config.hidden, config.options, config.stages
        self.features, c = _conv_stack(config)
        self.tokens = nn.Linear(c, h)
        self.summary = nn.Sequential(nn.Linear(c * config.pool ** config.rank, h), nn.ReLU())
        self.initial = nn.Linear(h, h * config.layers)
        self.code_embedding = nn.Embedding(k + 1, h)  # index k: the start symbol
        self.stage_embedding = nn.Embedding(n, h)
        self.gru = nn.GRU(h, h, config.layers, batch_first=True)
        self.attention = TokenAttention(h, config.heads) if config.heads else None
        width = 2 * h if config.heads else h
        self.head = nn.Sequential(nn.Linear(width, h), nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(h, k))

    def encode_image(self, x: torch.Tensor) -> tuple[tuple | None, torch.Tensor, torch.Tensor]:
        """(attention memory of the image tokens (None without attention), summary (B, H),
        initial GRU state (layers, B, H)) of images."""
        f = self._features(x)  # (B, C', pool, pool)
        summary = self.summary(f.flatten(1))
        memory = None
        if self.attention is not None:
            memory = self.attention.memory(self.tokens(f.flatten(2).transpose(1, 2)))
        h0 = torch.tanh(self.initial(summary)).view(x.shape[0], self.config.layers, -1).transpose(0, 1)
        return memory, summary, h0.contiguous()

    def _out(self, states: torch.Tensor, memory) -> torch.Tensor:
        if self.attention is not None:
            states = torch.cat([states, self.attention(states, memory)], dim=2)
        return self.head(states)

    def forward(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: images (B, C, H, W), codes (B, n) -> logits (B, n, K) of codes
        0..n-1, where code i's logits read codes < i (all stages in one GRU call)."""
        memory, summary, h0 = self.encode_image(x)
        n = codes.shape[1]
        previous = torch.cat([codes.new_full((codes.shape[0], 1), self.config.options), codes[:, :-1]], 1)
        steps = torch.arange(n, device=codes.device)
        inputs = self.code_embedding(previous) + self.stage_embedding(steps) + summary.unsqueeze(1)
        states, _ = self.gru(inputs, h0)
        return self._out(states, memory)

    def free_run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes (B, N), logits (B, N, K)) reading its own argmax codes, one stage at a time."""
        memory, summary, h = self.encode_image(x)
        previous = torch.full((x.shape[0],), self.config.options, dtype=torch.long, device=x.device)
        codes, logits = [], []
        for i in range(self.config.stages):
            inputs = self.code_embedding(previous) + self.stage_embedding.weight[i] + summary
            state, h = self.gru(inputs.unsqueeze(1), h)
            out = self._out(state, memory)[:, 0]
            previous = out.argmax(dim=1)
            codes.append(previous)
            logits.append(out)
        return torch.stack(codes, 1), torch.stack(logits, 1)

    def logits(self, x: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        return self.free_run(x)[1] if codes is None else self(x, codes)


def build_encoder(config: DistilledConfig) -> _Encoder:
    """A fresh (untrained) encoder of ``config.kind``, its size checked first (:func:`check_size`)."""
    check_size(config)
    return AutoregressiveEncoder(config) if config.kind == "autoregressive" else DistilledEncoder(config)


def encoder_parameters(config: DistilledConfig) -> int:
    """Parameters of the encoder ``config`` describes, counted on the meta device before it is built
    (:func:`vqdraw.core.sizing.count_parameters`). They are affine in the GRU's layers (each layer
    alike, and the initial state's layer is one more row per layer), so thousands of layers are
    measured on builds of one and two and extrapolated exactly."""
    from ..core.sizing import count_parameters

    kind = AutoregressiveEncoder if config.kind == "autoregressive" else DistilledEncoder
    if kind is DistilledEncoder or config.layers <= 2:
        return count_parameters(lambda: kind(config))
    one, two = (count_parameters(lambda n=n: kind(replace(config, layers=n))) for n in (1, 2))
    return one + (config.layers - 1) * (two - one)


def check_size(config: DistilledConfig) -> None:
    """Refuse (one-line ConfigError) an encoder of more than :data:`MAX_PARAMETERS` parameters,
    before anything is allocated."""
    from ..core.sizing import check_parameters

    check_parameters("distilled encoder", encoder_parameters(config), MAX_PARAMETERS)


def load_encoder(directory: str | Path, map_location: str | torch.device = "cpu", model=None) -> _Encoder:
    """The encoder of either kind saved in `directory` (its distilled.json is in ``.meta``); with
    ``model``, one that does not fit it is refused before it is built."""
    return _Encoder.load(directory, map_location, model)


def load_distilled(path: str | Path, model=None, map_location: str | torch.device | None = None) -> _Encoder:
    """The distilled encoder stored in a model folder (or a run folder's newest checkpoint).

    With `model`, checks that the encoder was trained for exactly this model (shapes and the
    fingerprint of its weights) and puts it on the model's device.
    """
    if not isinstance(path, (str, Path)) or not str(path):
        raise InputError(f"a distilled encoder is found by a model or run folder path, got {path!r:.60}")
    folder = Path(path)
    if not (folder / CONFIG_FILE).exists():
        folder = runs.resolve_model_dir(path)
    if not (folder / CONFIG_FILE).exists():
        raise InputError(f"no distilled encoder in {folder}: run `vqdraw distill --model {path}` first "
                         f"(it writes {WEIGHTS_FILE} into the model folder)")
    device = map_location if map_location is not None else (model.device if model is not None else "cpu")
    encoder = load_encoder(folder, map_location=device, model=model)
    if model is not None:
        check_fits(model, encoder, str(folder / CONFIG_FILE))
        want = encoder.meta.get("model_fingerprint")
        if want is not None and want != model.fingerprint().hex():
            raise CheckpointError(f"{folder / CONFIG_FILE}: this distilled encoder was trained for other "
                                  "model weights; run `vqdraw distill` again")
    return encoder


def check_fits(model, encoder: _Encoder, what: str = "the encoder") -> None:
    """Refuse an encoder whose codes do not fit `model` (image shape, N, K)."""
    _check_config_fits(model, encoder.config, what)


def _check_config_fits(model, cfg: DistilledConfig, what: str) -> None:
    c = model.config
    if (tuple(cfg.data_shape), cfg.stages, cfg.options) != (tuple(c.data_shape), c.stages, c.options):
        raise InputError(
            f"{what} predicts {cfg.stages} codes in [0, {cfg.options}) for {tuple(cfg.data_shape)} images; "
            f"the model has N={c.stages}, K={c.options}, images {tuple(c.data_shape)}"
        )


# ---------------------------------------------------------------------- training data
@dataclass
class DistillResult:
    encoder: _Encoder
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


def greedy_codes(model, images_of, count: int, batch: int = 250, bar: Progress | None = None,
                 prefix: torch.Tensor | None = None) -> torch.Tensor:
    """Greedy codes (count, N) for images ``images_of(range)`` encoded `batch` at a time. With
    `prefix` (count, s): those codes for the first s stages, then the greedy continuation from
    the canvas they drew (:func:`continue_greedy`)."""
    out = []
    for start in range(0, count, batch):
        idx = range(start, min(start + batch, count))
        x = images_of(idx)
        if prefix is None:
            out.append(model.encode(x).cpu())
        else:
            out.append(continue_greedy(model, x, prefix[start: start + len(idx)]).cpu())
        if bar is not None:
            bar.update(len(idx))
    return torch.cat(out) if out else torch.zeros((0, model.stages), dtype=torch.long)


def continue_greedy(model, x: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
    """Codes (B, N): `prefix` (B, s) for stages < s, then the greedy encoder's choices for stages
    s..N-1 starting from the canvas the prefix drew (s = 0: plain greedy codes)."""
    return model.encode(x.to(model.device), prefix=prefix)


def prior_samples(model, count: int, seed: int, batch: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (count, C, H, W) on the CPU, codes (count, N)): uniformly random codes, decoded.
    Each code is an exact code of its image (up to the clamp to [0, 1]), so it is a free label."""
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, model.options, (count, model.stages), generator=gen)
    images = [model.decode(c).cpu() for c in codes.split(batch)]
    return (torch.cat(images) if images else torch.zeros((0, *model.config.data_shape))), codes


def code_metrics(model, images: torch.Tensor, encoder=None, batch: int = 250,
                 bar: Progress | None = None) -> tuple[torch.Tensor, dict]:
    """(codes (B, N), metrics) of encoding `images` greedily, or with `encoder`, then decoding:
    ``mse`` is the likelihood's loss of the final canvas (normalised MSE for mse models, the
    paper's units; nats per element otherwise), then data-space MSE and PSNR."""
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


# ---------------------------------------------------------------------- training
def distill(
    model,
    train_set,
    test_set,
    config: DistillConfig | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    *,
    encoder_config: dict | None = None,
    save: bool = True,
    meta: dict | None = None,
    **settings,
) -> DistillResult:
    """Train a distilled encoder of `config.kind` to predict `model`'s greedy codes; save it into `out_dir`.

    ``config`` (:class:`DistillConfig`) holds the training settings; keyword ``settings`` change
    its fields (``distill(model, train, test, steps=300, kind="independent")``).

    1. Greedy-encode the train split once (targets) and the test split (for evaluation); decode
       `prior_images` uniformly random codes (default: as many as train images) when
       ``prior_fraction > 0``.
    2. `steps` Adam steps of cross-entropy (mean over stages) on batches of `batch` images, a
       share `prior_fraction` of them prior samples with their codes, the rest train images
       in the seeded order of :func:`vqdraw.loop.batch_indices`. The autoregressive kind reads
       the target codes (teacher forcing).
    3. ``segments=S``: the steps are split over ceil(N / S) rounds; before round r > 0 the train
       images are labelled again with the encoder's own codes for stages < r·S and the greedy
       continuation from there (see the module docstring).
    4. Optionally `finetune_steps` steps on the reconstruction error through the frozen decoder
       (straight-through argmax; see the module docstring); learning rate `finetune_lr` (lr/10).
    5. Evaluate on the test split and write distilled.* into `out_dir` (needed when ``save``; the
       CLI passes the model folder), holding the folder's lock (:class:`vqdraw.runs.RunLock`)
       for the whole call.
    """
    renamed = {"train_limit": "train_images", "test_limit": "test_images"}  # the keywords' old names
    cfg = override(config or DistillConfig(), **{renamed.get(k, k): v for k, v in settings.items()})
    if cfg.segments is not None and cfg.segments > model.stages:
        raise ConfigError(f"distill: segments (stages per segment) must be in [1, {model.stages}]")
    if save and out_dir is None:
        raise InputError("distill: give out_dir (the model folder), or save=False")
    for s in (train_set, test_set):
        if s.data_shape != tuple(model.config.data_shape):
            raise InputError(f"dataset {s.name!r} has images of shape {s.data_shape}; the model takes "
                             f"{tuple(model.config.data_shape)}")
    n_train = len(train_set) if cfg.train_images is None else min(cfg.train_images, len(train_set))
    n_test = len(test_set) if cfg.test_images is None else min(cfg.test_images, len(test_set))
    if n_train == 0 or n_test == 0:
        raise InputError("distill: the train and test splits must not be empty")
    if not save:
        return _distill(model, train_set, test_set, None, progress, meta, cfg, encoder_config or {}, n_train, n_test)
    out_dir = Path(out_dir)
    with runs.RunLock(runs.owner_folder(out_dir)):
        return _distill(model, train_set, test_set, out_dir, progress, meta, cfg, encoder_config or {}, n_train, n_test)


def _distill(model, train_set, test_set, out_dir, progress, meta, cfg: DistillConfig, encoder_config: dict,
             n_train: int, n_test: int) -> DistillResult:
    steps, batch, lr, seed, kind = cfg.steps, cfg.batch, cfg.lr, cfg.seed, cfg.kind
    prior_fraction, segments = cfg.prior_fraction, cfg.segments
    finetune_steps, finetune_lr = cfg.finetune_steps, cfg.finetune_lr
    prior_images = cfg.prior_images or n_train
    device = model.device
    model.eval()
    t0 = time.perf_counter()
    n_prior = prior_images if prior_fraction > 0 else 0
    bar = Progress(n_train + n_test + n_prior, desc="greedy codes", unit="img", enabled=progress)
    train_codes = greedy_codes(model, lambda i: train_set.batch(i, device), n_train, bar=bar)
    test_images = test_set.batch(range(n_test), "cpu")
    test_codes, greedy = code_metrics(model, test_images, bar=bar)
    prior_x, prior_c = prior_samples(model, n_prior, seed + 2)
    bar.update(n_prior)
    bar.close()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = build_encoder(DistilledConfig.for_model(model, kind, **encoder_config)).to(device)
    optimizer = adam(encoder.parameters(), lr)
    recent: list[float] = []
    n_fake = round(batch * prior_fraction) if n_prior else 0
    n_real = max(1, batch - n_fake)
    gen = torch.Generator().manual_seed(seed + 3)
    labels = {"codes": train_codes}

    def one_step(step: int, idx: torch.Tensor) -> dict:
        x, target = train_set.batch(idx, device), labels["codes"][idx].to(device)
        if n_fake:
            pick = torch.randint(0, n_prior, (n_fake,), generator=gen)
            x = torch.cat([x, prior_x[pick].to(device)])
            target = torch.cat([target, prior_c[pick].to(device)])
        logits = encoder.logits(x, target)  # teacher forcing for the autoregressive kind
        loss = F.cross_entropy(logits.flatten(0, 1), target.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        recent[:] = (recent + [loss.item()])[-50:]
        accuracy = (logits.detach().argmax(2) == target).float().mean().item()
        return {"ce": sum(recent) / len(recent), "batch_accuracy": accuracy}

    size = segments or model.stages
    starts = list(range(0, model.stages, size))
    history: list[dict] = []
    done = 0
    for r, start in enumerate(starts):
        stop = steps * (r + 1) // len(starts)
        if start:  # label again: own codes before this segment, the greedy continuation after
            own = _predict_all(encoder, lambda i: train_set.batch(i, device), n_train)
            labels["codes"] = greedy_codes(model, lambda i: train_set.batch(i, device), n_train,
                                           prefix=own[:, :start])
        encoder.train()
        bar = Progress(steps, initial=done, desc=f"distil {r + 1}/{len(starts)}" if len(starts) > 1 else "distil",
                       enabled=progress)
        logged = run_steps(one_step, DataOrder(n_train, n_real, seed), start=done, stop=stop, total=steps,
                           hooks=Hooks(progress=bar, postfix=lambda r, _: {"ce": f"{r['ce']:.3f}"}))
        history += [{**h, "segment_start": start} for h in logged]
        done = stop

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
            "training": {"steps": steps, "batch": batch, "lr": lr, "seed": seed, "kind": kind,
                         "prior_fraction": prior_fraction, "prior_images": n_prior, "segments": segments,
                         "finetune_steps": finetune_steps, "train_images": n_train, "test_images": n_test,
                         "dataset": train_set.name, **(meta or {})},
            "metrics": result.metrics(),
        })
    return result


def _predict_all(encoder: _Encoder, images_of, count: int, batch: int = 250) -> torch.Tensor:
    out = [encoder.predict(images_of(range(s, min(s + batch, count)))).cpu() for s in range(0, count, batch)]
    return torch.cat(out)


def finetune(model, encoder: _Encoder, train_set, steps: int, batch: int, lr: float, *,
             n_train: int | None = None, seed: int = 1, progress: bool = False,
             history: list | None = None) -> list[float]:
    """Straight-through fine-tuning of `encoder` on the reconstruction error through the frozen
    decoder. Returns the loss of every step (mean over stages of the canvas' likelihood loss);
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
        logged = run_steps(one_step, DataOrder(n_train, batch, seed), stop=steps,
                           hooks=Hooks(progress=Progress(steps, desc="fine-tune", enabled=progress),
                                       postfix=lambda r, _: {"mse": f"{losses[-1]:.4f}"}))
    finally:
        for p, r in zip(model.parameters(), frozen):
            p.requires_grad_(r)
    if history is not None:
        history += [{"finetune_step": r["step"], "mse": r["mse"]} for r in logged]
    return losses


def relaxed_reconstruction_loss(model, encoder: _Encoder, x: torch.Tensor) -> torch.Tensor:
    """Mean over stages of the likelihood's loss of the canvas (normalised MSE, BCE, ...) when
    following the encoder's argmax codes; gradients reach the logits through a straight-through
    softmax at every stage (:func:`vqdraw.core.stageloop.run_relaxed`). The autoregressive kind reads
    its own (free-running) codes, so the hard codes are its predictions."""
    target = model.likelihood.target(x)
    logits = encoder.logits(x)  # (B, N, K)
    soft = logits.softmax(dim=2)
    hard = F.one_hot(soft.argmax(dim=2), soft.shape[2]).to(soft.dtype)
    weights = hard + soft - soft.detach()  # forward: exactly one-hot; backward: softmax gradient
    return stageloop.run_relaxed(model.refiner, model.likelihood, weights, target).mean()
