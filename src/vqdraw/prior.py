"""A learned prior over a VQ-DRAW model's codes: p(c) = prod_i p(c_i | c_<i).

VQ-DRAW stores every code at N·log2 K bits and samples from a uniform prior. This module trains a
small autoregressive network over the N stage tokens (a code embedding plus a stage embedding, one
GRU layer, an output layer plus a per-stage output bias) on the codes of a model's training split,
and uses it three ways:

* entropy coding: ``.vqd`` version 3 files range-code each item's codes with the prior's
  probabilities (:mod:`vqdraw.compress.entropy`), computed in exact integer arithmetic
  (:mod:`vqdraw.compress.fixedpoint`) so that every machine gets the same numbers;
* sampling: :meth:`Prior.sample` draws codes stage by stage (with a temperature);
* likelihood: :meth:`Prior.log_prob` replaces the uniform ``N ln K`` term of the §4 bounds.

A prior is stored beside its model (a model folder, or a run folder's checkpoint) as
``prior.json`` + ``prior.safetensors``; ``prior.json`` records the model's fingerprint, and
:func:`load_prior` refuses a prior made for another model.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from . import pretrained, runs
from .errors import CheckpointError, ConfigError, InputError

STORED = runs.Format("vqdraw-prior", 1, key="prior", config_file="prior.json", weights_file="prior.safetensors")
MAX_WIDTH = 1024
"""Largest embedding or hidden width (bounds the integer arithmetic: docs/prior.md)."""
MAX_WEIGHT = 64.0
"""Largest weight magnitude a stored prior may have (keeps every integer sum inside int64)."""
DEFAULT_BLOCK = 1024
"""Items per block of an entropy-coded file (fewer for a large K: see :func:`default_block`)."""
MAX_SAMPLE_CELLS = 2**27
""":meth:`Prior.sample` holds ``n * (K + stages)`` numbers (8 bytes each) at once: at most this many (1 GiB)."""
MAX_PARAMETERS = 2**26
"""Most parameters a prior may have (256 MiB of float32; its exact integer twin takes twice that):
checked before one is built (:func:`check_size`), whatever a prior.json declares."""

__all__ = ["Prior", "PriorConfig", "PriorNet", "check_size", "find_prior", "load_prior", "train_prior"]


@dataclass(frozen=True)
class PriorConfig:
    """The prior network's shape."""

    options: int
    """K, codes per stage."""
    stages: int
    """N, stages."""
    embed: int = 64
    """width of the code and stage embeddings"""
    hidden: int = 128
    """GRU state width"""
    dropout: float = 0.1
    """dropout on the GRU's input and output while training"""

    def __post_init__(self):
        for name, low, high in (("options", 2, 65535), ("stages", 1, 65535), ("embed", 1, MAX_WIDTH),
                                ("hidden", 1, MAX_WIDTH)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"prior {name} must be a whole number in {low}..{high}, got {value!r}")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError(f"prior dropout must be in [0, 1), got {self.dropout!r}")

    @classmethod
    def from_dict(cls, data: dict) -> "PriorConfig":
        if not isinstance(data, dict):
            raise ConfigError("prior config must be a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown prior config fields: {', '.join(sorted(unknown))}")
        return cls(**data)


def check_size(config: PriorConfig) -> None:
    """Refuse (one-line ConfigError) a prior of more than :data:`MAX_PARAMETERS` parameters, counted
    on the meta device (:func:`vqdraw.core.sizing.count_parameters`) before anything is allocated."""
    from .core.sizing import check_parameters, count_parameters

    check_parameters(f"prior (K={config.options}, N={config.stages})",
                     count_parameters(lambda: PriorNet(config)), MAX_PARAMETERS)


class PriorNet(nn.Module):
    """Logits of p(c_i | c_<i) for every stage i: (B, n) codes -> (B, n, K) logits.

    The input at stage i is ``code_embedding[c_{i-1}] + stage_embedding[i]`` (``c_{-1}`` is the
    start token K); the output ``out(h_i) + stage_bias[i]``. :class:`vqdraw.compress.fixedpoint.ExactGRU`
    computes the same in integers.
    """

    def __init__(self, config: PriorConfig):
        super().__init__()
        self.config = config
        K, N, E, H = config.options, config.stages, config.embed, config.hidden
        self.code_embedding = nn.Embedding(K + 1, E)
        self.stage_embedding = nn.Embedding(N, E)
        nn.init.normal_(self.code_embedding.weight, std=0.1)
        nn.init.normal_(self.stage_embedding.weight, std=0.1)
        self.gru = nn.GRU(E, H, batch_first=True)
        self.out = nn.Linear(H, K)
        self.stage_bias = nn.Parameter(torch.zeros(N, K))
        self.drop = nn.Dropout(config.dropout)

    def inputs(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, n) codes -> (B, n, E): each stage's input (the code before it and the stage)."""
        B, n = codes.shape
        previous = torch.cat([torch.full((B, 1), self.config.options, dtype=torch.long, device=codes.device),
                              codes[:, :-1]], dim=1)
        return self.code_embedding(previous) + self.stage_embedding.weight[:n]

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        h, _ = self.gru(self.drop(self.inputs(codes)))
        return self.out(self.drop(h)) + self.stage_bias[: codes.shape[1]]


class Prior:
    """A trained prior: float network (training, sampling) and its exact integer twin (coding,
    :meth:`log_prob`). ``model_fingerprint``: the model whose codes it was trained on."""

    def __init__(self, net: PriorNet, model_fingerprint: bytes | None = None, meta: dict | None = None):
        self.net = net.cpu().eval()
        self.config = net.config
        self.model_fingerprint = model_fingerprint
        self.meta = dict(meta or {})
        self._exact = None
        self._fingerprint = None

    @property
    def options(self) -> int:
        return self.config.options

    @property
    def stages(self) -> int:
        return self.config.stages

    def fingerprint(self) -> bytes:
        """16 bytes naming this exact prior (SHA-256 of its config and weights), recorded in the
        header of every file coded with it."""
        if self._fingerprint is None:
            self._fingerprint = runs.fingerprint(asdict(self.config), self.net.state_dict())
        return self._fingerprint

    @property
    def exact(self):
        """The integer network (:class:`vqdraw.compress.fixedpoint.ExactGRU`) coding uses."""
        if self._exact is None:
            from .compress.fixedpoint import ExactGRU

            self._exact = ExactGRU({k: v.detach().cpu().numpy() for k, v in self.net.state_dict().items()})
        return self._exact

    def _check_codes(self, codes) -> np.ndarray:
        arr = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
        if arr.ndim != 2 or not 1 <= arr.shape[1] <= self.stages:
            raise InputError(f"codes must have shape (items, 1..{self.stages}), got {tuple(arr.shape)}")
        if arr.size and (arr.dtype.kind not in "iu" or arr.min() < 0 or arr.max() >= self.options):
            raise InputError(f"codes must be integers in [0, {self.options})")
        return arr.astype(np.int64, copy=False)

    def stage_log_probs(self, codes, chunk: int = DEFAULT_BLOCK) -> torch.Tensor:
        """ln p(c_i | c_<i) (B, n) in nats (float64) under the exact coding frequencies: what an
        entropy-coded file spends on each code, up to the coder's few bits per file."""
        arr = self._check_codes(codes)
        out = np.zeros(arr.shape, dtype=np.float64)
        rows = np.arange(arr.shape[1])
        for start in range(0, arr.shape[0], chunk):
            part = arr[start:start + chunk]
            freq = self.exact.frequencies(part)
            picked = freq[np.arange(part.shape[0])[:, None], rows[None, :], part]
            out[start:start + chunk] = np.log(picked) - math.log(2.0) * 24
        return torch.from_numpy(out)

    def log_prob(self, codes) -> torch.Tensor:
        """ln p(c) (B,) in nats (float64) of codes (B, n), n <= N (a prefix: its first n stages)."""
        return self.stage_log_probs(codes).sum(dim=1)

    @torch.no_grad()
    def float_log_probs(self, codes) -> torch.Tensor:
        """ln p(c_i | c_<i) (B, n) of the float network (what training optimises)."""
        arr = torch.from_numpy(self._check_codes(codes))
        logits = self.net(arr).double()
        return torch.log_softmax(logits, dim=-1).gather(2, arr.unsqueeze(2)).squeeze(2)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, *, generator: torch.Generator | None = None,
               stages: int | None = None) -> torch.Tensor:
        """``n`` codes (n, stages) int64 drawn stage by stage from the float network, its logits
        divided by ``temperature`` (1: the prior itself; lower: more typical codes)."""
        from .core.inputs import check_count

        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or not math.isfinite(temperature) or temperature <= 0:
            raise InputError(f"temperature must be a finite number > 0, got {temperature!r}")
        n = check_count(n, "the number of samples")
        k = self.stages if stages is None else stages
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= self.stages:
            raise InputError(f"stages must be a whole number in 1..{self.stages}, got {stages!r:.40}")
        k = int(k)
        if n * (self.options + k) > MAX_SAMPLE_CELLS:  # the codes and one stage's probabilities (float64)
            raise InputError(f"{n:,} samples of a prior with K={self.options} would take "
                             f"{8 * n * (self.options + k) / 2**30:.1f} GiB at once; at most "
                             f"{MAX_SAMPLE_CELLS // (self.options + k):,} (ask in parts)")
        net = self.net
        codes = torch.zeros((n, k), dtype=torch.long)
        previous = torch.full((n,), self.options, dtype=torch.long)
        h = None
        for t in range(k):
            x = (net.code_embedding(previous) + net.stage_embedding.weight[t]).unsqueeze(1)
            out, h = net.gru(x, h)
            logits = net.out(out[:, 0]) + net.stage_bias[t]
            probs = torch.softmax(logits.double() / temperature, dim=-1)
            previous = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            codes[:, t] = previous
        return codes

    # --------------------------------------------------------------- the .vqd coder interface
    def encode_codes(self, codes: np.ndarray, block: int) -> bytes:
        """The range-coded payload of codes (B, n) (used by :func:`vqdraw.compress.bitstream.write_vqd`)."""
        from .compress.entropy import encode_codes

        return encode_codes(self.exact, self._check_codes(codes), int(block))

    def decode_codes(self, payload: bytes, count: int, n: int, block: int, error=ValueError) -> np.ndarray:
        """Codes (count, n) of a range-coded payload (used by :func:`vqdraw.compress.bitstream.read_vqd`)."""
        from .compress.entropy import decode_codes

        return decode_codes(self.exact, payload, int(count), int(n), int(block), error)

    def check_model(self, model) -> None:
        """Refuse (one line) a model this prior was not trained for."""
        if self.model_fingerprint is not None and self.model_fingerprint != model.fingerprint():
            raise InputError(f"this prior was trained on the codes of another model (prior for "
                             f"{self.model_fingerprint.hex()[:12]}, this model {model.fingerprint().hex()[:12]})")
        if (self.options, self.stages) != (int(model.options), int(model.stages)):
            raise InputError(f"this prior is for K={self.options}, N={self.stages}; the model has "
                             f"K={model.options}, N={model.stages}")

    def save(self, directory: str | Path) -> Path:
        """Write prior.json and prior.safetensors into ``directory`` (beside the model)."""
        extra = {"model_fingerprint": self.model_fingerprint.hex() if self.model_fingerprint else None,
                 "prior_fingerprint": self.fingerprint().hex(), **self.meta}
        return runs.save(directory, STORED, asdict(self.config), self.net.state_dict(), extra)


def default_block(options: int) -> int:
    """Items per block of an entropy-coded file: 1024, fewer when K is large (block·K <= 2**22)."""
    from .compress.bitstream import MAX_BLOCK_CELLS

    return max(1, min(DEFAULT_BLOCK, MAX_BLOCK_CELLS // int(options)))


# ---------------------------------------------------------------------------------------------
# Loading


def prior_folder(path: str | Path) -> Path:
    """The folder a prior lives in: ``path`` itself if it holds prior.json or config.json, else
    the newest checkpoint of the run folder ``path``."""
    if not isinstance(path, (str, Path)) or not str(path):
        raise InputError(f"a prior is found by a model or run folder path, got {path!r:.60}")
    folder = pretrained.resolve(path)  # pretrained:NAME -> its package folder
    if (folder / STORED.config_file).exists():
        return folder
    return runs.resolve_model_dir(path)


def find_prior(path: str | Path, model=None) -> Prior | None:
    """The prior beside the model at ``path`` (a model or run folder), or None if there is none."""
    folder = prior_folder(path)
    if not (folder / STORED.config_file).exists():
        return None
    return load_prior(folder, model)


def load_prior(path: str | Path, model=None) -> Prior:
    """Load the prior saved beside a model (``path``: the model folder, a run folder, or the
    folder holding prior.json). With ``model``, refuse a prior trained for another model."""
    folder = prior_folder(path)
    if not (folder / STORED.config_file).exists():
        raise CheckpointError(f"{folder}: no prior here (prior.json); train one with: vqdraw prior {path}")
    where = folder / STORED.config_file

    def build(stored: dict) -> PriorNet:  # the declared sizes are checked before anything is built
        try:
            config = PriorConfig.from_dict(stored)
            if model is not None and (config.options, config.stages) != (int(model.options), int(model.stages)):
                raise ConfigError(f"this prior is for K={config.options}, N={config.stages}; the model has "
                                  f"K={model.options}, N={model.stages}")
            check_size(config)
        except ConfigError as exc:
            raise CheckpointError(f"{where}: {exc}") from None
        return PriorNet(config)

    net, meta = runs.load(folder, STORED, build, "cpu", what="prior")
    for name, t in net.state_dict().items():
        if t.numel() and float(t.abs().max()) > MAX_WEIGHT:
            raise CheckpointError(f"{folder / STORED.weights_file}: {name} holds values beyond ±{MAX_WEIGHT:g}")
    fp = meta.get("model_fingerprint")
    try:
        model_fp = bytes.fromhex(fp) if fp is not None else None
    except (TypeError, ValueError):
        raise CheckpointError(f"{folder / STORED.config_file}: model_fingerprint must be hex, got {fp!r}") from None
    extra = {k: v for k, v in meta.items()
             if k not in ("format", "version", STORED.key, "model_fingerprint", "prior_fingerprint")}
    prior = Prior(net, model_fp, extra)
    if model is not None:
        try:
            prior.check_model(model)
        except InputError as exc:
            raise CheckpointError(f"{folder / STORED.config_file}: {exc}") from None
    return prior


# ---------------------------------------------------------------------------------------------
# Training


@dataclass
class PriorReport:
    """What :func:`train_prior` measured (bits per item, by stage, on the held-out codes)."""

    steps: int
    seconds: float
    train_items: int
    heldout_items: int
    uniform_bits: float  # N log2 K
    heldout_bits: float  # float network, best step
    heldout_stage_bits: list[float] = field(default_factory=list)
    best_step: int = 0
    stopped_early: bool = False


@dataclass(frozen=True)
class PriorTraining:
    """How :func:`train_prior` trains (each field is also a keyword of ``train_prior``)."""

    steps: int = 20000
    batch: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4
    time_budget: float | None = None
    """Seconds."""
    holdout: float = 0.1
    """Share of the codes held out to pick the best weights and stop early."""
    eval_every: int = 100
    patience: int = 10
    """Evaluations without improvement before stopping."""
    seed: int = 0


def train_prior(codes, options: int, *, config: PriorConfig | None = None, training: PriorTraining | None = None,
                model_fingerprint: bytes | None = None, progress: bool = False,
                **keywords) -> tuple[Prior, PriorReport]:
    """Fit a prior to ``codes`` (M, N) (cross-entropy, AdamW), keeping the weights with the lowest
    cross-entropy on a held-out ``holdout`` share of the codes (a seeded random split), evaluated
    every ``eval_every`` steps; stops after ``steps``, ``time_budget`` seconds, or ``patience``
    evaluations without improvement (``training``: a :class:`PriorTraining`, or its fields as
    keywords)."""
    if training is not None and keywords:
        raise ConfigError("give the prior's training either as training=PriorTraining(...) or as keywords, not both")
    try:
        training = training or PriorTraining(**keywords)
    except TypeError as exc:
        raise TypeError(f"train_prior(): {exc}") from None
    steps, batch, lr, weight_decay = training.steps, training.batch, training.lr, training.weight_decay
    time_budget, holdout, eval_every = training.time_budget, training.holdout, training.eval_every
    patience, seed = training.patience, training.seed
    codes = torch.as_tensor(codes, dtype=torch.long).cpu()
    if codes.ndim != 2 or codes.shape[0] < 2:
        raise InputError(f"a prior needs codes of shape (items >= 2, stages), got {tuple(codes.shape)}")
    if codes.min() < 0 or codes.max() >= options:
        raise InputError(f"codes must be in [0, {options})")
    config = config or PriorConfig(int(options), int(codes.shape[1]))
    if (config.options, config.stages) != (int(options), int(codes.shape[1])):
        raise ConfigError("prior config K/N do not match the codes")
    if not 0 < holdout < 1:
        raise ConfigError(f"holdout must be in (0, 1), got {holdout}")
    check_size(config)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    order = torch.randperm(codes.shape[0], generator=g)
    n_held = max(1, int(round(holdout * codes.shape[0])))
    held, train = codes[order[:n_held]], codes[order[n_held:]]
    net = PriorNet(config)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100))

    def heldout_bits() -> torch.Tensor:
        net.eval()
        with torch.no_grad():
            lp = torch.log_softmax(net(held).double(), -1).gather(2, held.unsqueeze(2)).squeeze(2)
        net.train()
        return -lp.mean(0) / math.log(2)

    from .progress import Progress  # reported through vqdraw.progress; the command shows it
    from .loop import Cadence, Hooks, run_steps
    from .training.schedule import TimeBudget

    def draw(step: int) -> torch.Tensor:  # a batch drawn with replacement, from the generator that split the codes
        return torch.randint(0, train.shape[0], (min(batch, train.shape[0]),), generator=g)

    def one_step(step: int, indices: torch.Tensor) -> dict:
        x = train[indices]
        loss = nn.functional.cross_entropy(net(x).reshape(-1, config.options), x.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            for p in net.parameters():
                p.clamp_(-MAX_WEIGHT, MAX_WEIGHT)
        return {"loss": float(loss.detach())}

    best = {"bits": heldout_bits(), "state": {k: v.clone() for k, v in net.state_dict().items()},
            "step": 0, "bad": 0}

    def evaluate(step: int) -> dict:
        """Keep the weights with the lowest held-out cross-entropy; count evaluations without one."""
        bits = heldout_bits()
        if float(bits.sum()) < float(best["bits"].sum()) - 1e-4:
            best.update(bits=bits, step=step, bad=0, state={k: v.clone() for k, v in net.state_dict().items()})
        else:
            best["bad"] += 1
        return {"heldout_bits": float(bits.sum())}

    start = time.monotonic()
    net.train()
    hooks = Hooks(evaluate=evaluate, progress=Progress(steps, desc="prior", unit="step", enabled=progress),
                  postfix=lambda record, _: {"heldout_bits": f"{record['heldout_bits']:.2f}"}
                  if "heldout_bits" in record else None,
                  stop=lambda record: best["bad"] >= patience)
    budget = TimeBudget(time_budget, steps) if time_budget is not None else None
    history = run_steps(one_step, draw, stop=steps, cadence=Cadence(log_every=None, eval_every=eval_every),
                        hooks=hooks, budget=budget)
    step = history[-1]["step"] if history else 0
    net.load_state_dict(best["state"])
    report = PriorReport(step, time.monotonic() - start, int(train.shape[0]), int(held.shape[0]),
                         config.stages * math.log2(config.options), float(best["bits"].sum()),
                         [float(b) for b in best["bits"]], best["step"], best["bad"] >= patience)
    return Prior(net, model_fingerprint, {"training": asdict(report)}), report
