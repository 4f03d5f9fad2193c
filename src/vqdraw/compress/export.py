"""A model as two ONNX graphs, to decode (and encode) anywhere ONNX Runtime runs (docs/export.md).

    decoder.onnx   codes (B, N) int64           -> data (B, C, *S) float32 in [0, 1]   (VQDraw.decode)
                                                   stages (B, N, C, *S): the data after each stage
    encoder.onnx   data (B, C, *S) float32      -> codes (B, N) int64                   (greedy VQDraw.encode)
    model.json     what the graphs are: data shape, K, N, modality, likelihood, fingerprint, mean/std, opset

The graphs replay the stage loop (:mod:`vqdraw.core.stageloop`) with plain tensor ops: every stage
is unrolled (the stage index picks a segment, a mask row, a head), the zero canvas's first stage is
the same for every item (computed once, on a batch of one), a stage's choice is a gather
from the K deltas, and greedy choices are the arg-min of the likelihood's per-option losses
(squared errors as ``||d||^2 - 2 d.r + ||r||^2``, as the encoder's fast path scores them). The
batch axis is dynamic. Exported with PyTorch's TorchScript-based exporter (``torch.onnx.export``,
``dynamo=False``): it needs only the ``onnx`` package.

The library prints nothing; :func:`export` returns an :class:`Exported` naming what it wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..io import atomic_write_json, atomic_writer

OPSET = 17
"""The ONNX opset the graphs use (LayerNorm is an operator from 17 on)."""

FORMAT = "vqdraw-onnx"
FORMAT_VERSION = 1

DECODER, ENCODER, DESCRIPTION = "decoder.onnx", "encoder.onnx", "model.json"


def _gather_option(deltas: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
    """deltas (B, K, C, *S), choice (B,) -> the chosen deltas (B, C, *S) (a Gather, batch-size free)."""
    index = choice.view(-1, 1, *([1] * (deltas.dim() - 2))).expand(-1, 1, *deltas.shape[2:])
    return deltas.gather(1, index).squeeze(1)


class _StageLoop(nn.Module):
    """The shared part of both graphs: the refiner and the likelihood of a model, stage by stage."""

    def __init__(self, model):
        super().__init__()
        self.refiner = model.refiner
        self.likelihood = model.likelihood
        self.stages = model.config.stages
        self.residual = getattr(model.refiner, "residual", True)

    def first_deltas(self) -> torch.Tensor:
        """Stage 0's deltas on the zero canvas, (1, K, C, *S): the same for every item."""
        zero = torch.zeros((1, *self.refiner.first_bias.shape[1:]), device=self.refiner.first_bias.device)
        return self.refiner.deltas(zero, 0)

    def advance(self, canvas: torch.Tensor, deltas: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
        picked = _gather_option(deltas, choice)
        return canvas + picked if self.residual else picked

    def to_data(self, canvas: torch.Tensor) -> torch.Tensor:
        lik = self.likelihood
        if lik.name == "categorical":  # no chunks (their count would freeze the batch size)
            return lik.logits(canvas).argmax(dim=canvas.dim() - lik.rank - 1).float() / (lik.levels - 1)
        return lik.to_data(canvas)

    def option_losses(self, canvas: torch.Tensor, deltas: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Every option's loss (B, K) for canvases (B, ...) and deltas (B or 1, K, ...)."""
        base = canvas if self.residual else torch.zeros_like(canvas)
        if getattr(self.likelihood, "squared_error", False):
            d = deltas.flatten(2)  # (B, K, P)
            r = (target - base).flatten(1).unsqueeze(2)  # (B, P, 1)
            p = d.shape[2]
            cross = torch.matmul(d, r).squeeze(2)  # (B, K)
            losses = (d * d).sum(2) - 2.0 * cross + (r * r).sum(1)
            return (losses / p).clamp_min(0.0)
        proposals = base.unsqueeze(1) + deltas
        if self.likelihood.name == "categorical":
            return self._categorical_losses(proposals, target)
        if proposals.shape[0] != target.shape[0]:  # the first stage's (1, K, ...) for every item
            proposals = proposals.expand(target.shape[0], *proposals.shape[1:])
        return self.likelihood.option_losses(proposals, target)

    def _categorical_losses(self, proposals: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the target classes (B, C, *S) under proposals (B or 1, K, C*E, *S),
        averaged over the elements: (B, K). Plain ops (the library's own keeps no logits for a
        backward pass, through a custom autograd function that does not export)."""
        log_p = torch.log_softmax(self.likelihood.logits(proposals), dim=2)  # (B, K, V, C, *S)
        classes = target.long().unsqueeze(1).unsqueeze(2)  # (B, 1, 1, C, *S)
        classes = classes.expand(-1, log_p.shape[1], 1, *log_p.shape[3:])
        if log_p.shape[0] != classes.shape[0]:
            log_p = log_p.expand(classes.shape[0], *log_p.shape[1:])
        return -log_p.gather(2, classes).flatten(2).mean(dim=2)


class Decoder(nn.Module):
    """codes (B, N) int64 -> data (B, C, *S): Algorithm 2 unrolled over the model's N stages; and
    the data after each stage, (B, N, C, *S) (the last one is the data), when built with ``stages``."""

    def __init__(self, model, stages: bool = True):
        super().__init__()
        self.loop = _StageLoop(model)
        self.stages = stages

    def forward(self, codes: torch.Tensor):
        loop = self.loop
        first = loop.first_deltas()[0]  # (K, C, *S)
        canvas = first[codes[:, 0]]  # (B, C, *S): the zero canvas plus the chosen first delta
        after = [loop.to_data(canvas)] if self.stages else []
        for stage in range(1, loop.stages):
            deltas = loop.refiner.deltas(canvas, stage)  # (B, K, C, *S)
            canvas = loop.advance(canvas, deltas, codes[:, stage])
            if self.stages and stage < loop.stages - 1:
                after.append(loop.to_data(canvas))
        data = loop.to_data(canvas)
        if not self.stages:
            return data
        return data, torch.stack([*after, data], 1)


class Encoder(nn.Module):
    """data (B, C, *S) in [0, 1] -> greedy codes (B, N) int64: Algorithm 1 unrolled."""

    def __init__(self, model):
        super().__init__()
        self.loop = _StageLoop(model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        loop = self.loop
        target = loop.likelihood.target(x)
        first = loop.first_deltas()  # (1, K, C, *S)
        zero = torch.zeros_like(first[:, 0])  # (1, C, *S)
        choice = loop.option_losses(zero, first, target).argmin(dim=1)  # (B,)
        canvas = first[0][choice]
        chosen = [choice]
        for stage in range(1, loop.stages):
            deltas = loop.refiner.deltas(canvas, stage)
            choice = loop.option_losses(canvas, deltas, target).argmin(dim=1)
            canvas = loop.advance(canvas, deltas, choice)
            chosen.append(choice)
        return torch.stack(chosen, 1)


@dataclass
class Exported:
    """What :func:`export` wrote."""

    folder: Path
    files: list[Path] = field(default_factory=list)
    description: dict = field(default_factory=dict)


def describe(model) -> dict:
    """model.json's content for `model` (see docs/export.md)."""
    from ..core.modality import modality_of

    cfg = model.config
    out = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "opset": OPSET,
        "modality": modality_of(cfg),
        "data_shape": list(cfg.data_shape),
        "options": cfg.options,
        "stages": cfg.stages,
        "likelihood": cfg.likelihood,
        "fingerprint": model.fingerprint().hex(),
        "mean": list(cfg.mean),
        "std": list(cfg.std),
        "decoder": {"file": DECODER, "input": {"name": "codes", "shape": ["B", cfg.stages], "dtype": "int64"},
                    "output": {"name": "data", "shape": ["B", *cfg.data_shape], "dtype": "float32"},
                    "stages": {"name": "stages", "shape": ["B", cfg.stages, *cfg.data_shape], "dtype": "float32"}},
        "encoder": {"file": ENCODER, "input": {"name": "data", "shape": ["B", *cfg.data_shape], "dtype": "float32"},
                    "output": {"name": "codes", "shape": ["B", cfg.stages], "dtype": "int64"}},
    }
    if cfg.likelihood == "categorical":
        out["categories"] = cfg.categories
    if getattr(cfg, "sample_rate", 0):
        out["sample_rate"] = cfg.sample_rate
    return out


REFUSED = {
    "discretized-logistic": "its bin probabilities use expm1, which ONNX opset 17 does not have",
}
"""Likelihoods whose encoder graph does not export, and why (the refusal's one line)."""


def check_exportable(model) -> None:
    """ConfigError in one line for a model :func:`export` refuses (before anything is written)."""
    why = REFUSED.get(model.config.likelihood)
    if why is not None:
        raise ConfigError(f"a model with the {model.config.likelihood} likelihood does not export to ONNX: {why}")


def export(model, folder: str | Path) -> Exported:
    """Write decoder.onnx, encoder.onnx and model.json for `model` into `folder` (created).

    Raises :class:`~vqdraw.errors.ConfigError` in one line for a model whose graph does not export.
    """
    try:
        import onnx  # noqa: F401  (the exporter needs it; a clear message when it is missing)
    except ImportError:
        raise ConfigError("ONNX export needs the onnx package: pip install 'vqdraw[export]'") from None
    check_exportable(model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    was_channels_last = getattr(model.refiner.segments[0], "memory_format", None) not in (None, torch.contiguous_format)
    model.refiner.set_speed(channels_last=False)  # plain NCHW graphs (channels-last is a CPU speed knob)
    try:
        shape = tuple(model.config.data_shape)
        codes = torch.zeros((2, model.config.stages), dtype=torch.long, device=model.device)
        data = torch.full((2, *shape), 0.5, device=model.device)
        decoder, encoder = folder / DECODER, folder / ENCODER
        _export(Decoder(model), codes, decoder, "codes", ["data", "stages"])
        _export(Encoder(model), data, encoder, "data", ["codes"])
    finally:
        model.refiner.set_speed(channels_last=was_channels_last)
    description = describe(model)
    meta = folder / DESCRIPTION
    atomic_write_json(meta, description)
    return Exported(folder, [decoder, encoder, meta], description)


ORT_WEB_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
"""What the page needs of onnxruntime-web's npm package (its ``dist/`` folder): the WebAssembly build."""

WEB_FILES = ("index.html", "app.js")
"""The page itself (package data beside this module, in ``web/``)."""


def check_web(model) -> None:
    """ConfigError in one line unless the web page can show this model's data (grey or colour images)."""
    from ..core.modality import modality_of

    kind = modality_of(model.config)
    if kind != "image" or model.config.data_shape[0] not in (1, 3):
        raise ConfigError(f"the web page draws grey or colour images; this is a {kind} model of data shape "
                          f"{tuple(model.config.data_shape)} (export it without --web)")


def find_ort_web(path: str | Path | None = None) -> Path:
    """onnxruntime-web's ``dist`` folder: `path` (the package folder or its dist folder), else
    ``node_modules/onnxruntime-web`` in the current folder. ConfigError in one line when missing."""
    candidates = [Path(path)] if path is not None else [Path("node_modules") / "onnxruntime-web"]
    for folder in candidates:
        for dist in (folder / "dist", folder):
            if all((dist / name).is_file() for name in ORT_WEB_FILES):
                return dist
    where = path if path is not None else "node_modules/onnxruntime-web"
    raise ConfigError(f"no onnxruntime-web in {where} (it needs {', '.join(ORT_WEB_FILES)}): run "
                      "`npm install onnxruntime-web` here, or pass the package's folder")


def write_web_page(folder: str | Path, ort_web: str | Path) -> list[Path]:
    """Write the static page (index.html, app.js) and onnxruntime-web's WebAssembly build, copied
    from its npm package's dist folder `ort_web`, into `folder`, beside the exported graphs.
    Returns the files written. The page must be served over HTTP (browsers fetch no WebAssembly
    from file:// pages)."""
    import shutil
    from importlib import resources

    folder, dist = Path(folder), Path(ort_web)
    written = []
    page = resources.files(__package__) / "web"
    for name in WEB_FILES:
        with atomic_writer(folder / name) as f:
            f.write(page.joinpath(name).read_bytes())
        written.append(folder / name)
    for name in ORT_WEB_FILES:
        with atomic_writer(folder / name) as f, open(dist / name, "rb") as src:
            shutil.copyfileobj(src, f)
        written.append(folder / name)
    return written  # ort.wasm.min.js carries its MIT licence notice in its header


def _export(module: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_names: list[str]) -> None:
    """Trace `module` on `example` into the ONNX file `path` (written atomically), batch axis dynamic.

    No constant folding: it would fold each stage's mask into its own copy of a convolution's
    weights (7x the file for the MNIST model); ONNX Runtime optimises the graph when it loads it."""
    import warnings

    try:
        with atomic_writer(path) as f, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on unrolled loops, not for the user
            torch.onnx.export(module, (example,), f, input_names=[input_name], output_names=output_names,
                              dynamic_axes={name: {0: "batch"} for name in (input_name, *output_names)},
                              opset_version=OPSET, dynamo=False, do_constant_folding=False)
    except (OSError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # the exporter's own errors are many kinds; say which graph, in one line
        text = " ".join(str(exc).split())[:300]
        raise ConfigError(f"this model's {path.stem} does not export to ONNX: {type(exc).__name__}: {text}") from None
