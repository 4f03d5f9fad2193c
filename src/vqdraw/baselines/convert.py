"""Import the paper author's checkpoints (unixpickle/vq-draw, branch ``official-release``).

His checkpoints are legacy-format PyTorch state dicts of his ``Encoder``:

    bias                          (K, C, H, W)  first-stage option biases      -> refiner.first_bias
    _stages, _grad_decay          ()            stage count, a training knob   -> config / ignored
    refiner.output_scale          ()            (one refiner: MNIST)           -> refiner.segments.0.output_scale
    refiner.layers.N.*                                                         -> refiner.segments.0.<unit>.*
    refiner.segments.S.output_scale, refiner.segments.S.layers.N.*             -> refiner.segments.S.*

``layers`` is his ``Sequential``: every module has an index N, parameter-free ReLUs included, so
where a tensor goes depends on his module order. :data:`LAYOUTS` writes that order down per preset
(read from his ``vq_draw/model.py``: ``MNISTRefiner``, ``SVHNRefiner``, ``CIFARRefiner``,
``CelebARefiner``); docs/fidelity.md prints it as tables with shapes.

The file is read with ``torch.load(..., weights_only=True)``: no pickle code runs.

The presets rebuild his layers exactly. Imported into another refiner layout (``refiner=``, e.g.
stage masks on the CIFAR-10/CelebA downsampling convolutions, ReLU+GroupNorm after the CIFAR-10
body convolution), a tensor his layers lack is filled with a neutral value; :func:`layer_differences`
says which fills are exact (a mask of ones is the identity) and which are not, and where GroupNorm
group counts differ.
"""

from __future__ import annotations

import hashlib
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..core.config import RefinerConfig, get_preset
from ..errors import CheckpointError
from ..core.model import VQDraw

# ---------------------------------------------------------------------------- his module order
# One entry per module of his refiner's ``layers`` Sequential, in his order (the index N is the
# position). Paths are vqdraw's, relative to ``refiner.segments.S.``.
#   ("conv", U)        Conv2d/ConvTranspose2d   layers.N.weight, .bias    -> U.weight, U.bias
#   ("mask", U)        CondChannelMask          layers.N.embeddings       -> U.masks
#   ("relu",)          ReLU                     no tensors
#   ("gn", U, G)       GroupNorm(G, channels)   layers.N.weight, .bias    -> U.weight, U.bias
#   ("res", (...))     ResidualBlock            its own Sequential: layers.N.M.*
#   ("heads",)         CondModule of per-stage convs  layers.N.module_list.S.weight/.bias -> heads.S.*

RELU = ("relu",)


def _unit(i: int, groups: int | None = None, mask: bool = True) -> tuple:
    """conv [-> mask] -> ReLU [-> GroupNorm(groups)]: one of his plain convolution layers."""
    out = [("conv", f"units.{i}.conv")]
    if mask:
        out.append(("mask", f"units.{i}.mask"))
    out.append(RELU)
    if groups:
        out.append(("gn", f"units.{i}.norm", groups))
    return tuple(out)


def _res(i: int, groups: tuple[int, int, int]) -> tuple:
    """His ResidualBlock: x + [ReLU, GN, 3x3 conv, mask, ReLU, GN, 1x1 conv, mask, ReLU, GN, 1x1 conv, mask]."""
    inner = []
    for j, g in enumerate(groups):
        inner += [RELU, ("gn", f"units.{i}.norms.{j}", g), ("conv", f"units.{i}.convs.{j}"),
                  ("mask", f"units.{i}.masks.{j}")]
    return (("res", tuple(inner)),)


LAYOUTS: dict[str, tuple] = {
    # MNISTRefiner: 5 convs + 2 transposed convs, each conv -> mask -> ReLU; 3x3 head.
    "mnist": sum((_unit(i) for i in range(7)), ()) + (("conv", "heads.0"),),
    # SVHNRefiner: 7 layers conv -> mask -> ReLU -> GN (64 ch: 4 groups, 128: 8, 256: 8), a
    # conv -> mask -> ReLU before the head, one 1x1 head per stage (CondModule).
    "svhn": (_unit(0, 4) + _unit(1, 8) + _unit(2, 8) + _unit(3, 8) + _unit(4, 8) + _unit(5, 8)
             + _unit(6, 8) + _unit(7) + (("heads",),)),
    # CIFARRefiner: unmasked downsampling conv -> ReLU -> GN(8); the body conv -> mask feeds the
    # residual stream raw; 6 residual blocks (GN 8, 8, 32); convT -> mask -> ReLU -> GN(8);
    # conv -> mask -> ReLU; 5x5 head.
    "cifar10": (_unit(0, 8, mask=False) + _unit(1, 8, mask=False)
                + (("conv", "units.2.conv"), ("mask", "units.2.mask"))
                + sum((_res(i, (8, 8, 32)) for i in range(3, 9)), ())
                + _unit(9, 8) + _unit(10, 8) + _unit(11) + (("conv", "heads.0"),)),
    # CelebARefiner: 3 unmasked downsampling conv -> ReLU -> GN (4, 8, 8 groups); 6 residual
    # blocks (GN 8, 8, 16); 3 convT -> mask -> ReLU -> GN(8); 5x5 head.
    "celeba": (_unit(0, 4, mask=False) + _unit(1, 8, mask=False) + _unit(2, 8, mask=False)
               + sum((_res(i, (8, 8, 16)) for i in range(3, 9)), ())
               + _unit(9, 8) + _unit(10, 8) + _unit(11, 8) + (("conv", "heads.0"),)),
}


def key_table(preset: str, segment_stages: int) -> dict[str, str]:
    """His key suffix (after ``layers.``) -> vqdraw key suffix (after ``refiner.segments.S.``),
    for one refiner of `preset` whose per-stage modules cover `segment_stages` stages."""
    table: dict[str, str] = {"output_scale": "output_scale"}

    def walk(entries: tuple, prefix: str) -> None:
        for n, entry in enumerate(entries):
            kind, at = entry[0], f"{prefix}{n}"
            if kind in ("conv", "gn"):
                table[f"{at}.weight"] = f"{entry[1]}.weight"
                table[f"{at}.bias"] = f"{entry[1]}.bias"
            elif kind == "mask":
                table[f"{at}.embeddings"] = f"{entry[1]}.masks"
            elif kind == "res":
                walk(entry[1], f"{at}.")
            elif kind == "heads":
                for s in range(segment_stages):
                    table[f"{at}.module_list.{s}.weight"] = f"heads.{s}.weight"
                    table[f"{at}.module_list.{s}.bias"] = f"heads.{s}.bias"

    if preset not in LAYOUTS:
        raise CheckpointError(f"no layout of the author's {preset!r} refiner; known: {', '.join(LAYOUTS)}")
    walk(LAYOUTS[preset], "layers.")
    return table


def group_norms(preset: str) -> dict[str, int]:
    """vqdraw path (relative to a segment) of each of his GroupNorms -> his group count."""
    out: dict[str, int] = {}

    def walk(entries: tuple) -> None:
        for entry in entries:
            if entry[0] == "gn":
                out[entry[1]] = entry[2]
            elif entry[0] == "res":
                walk(entry[1])

    walk(LAYOUTS[preset])
    return out


# ---------------------------------------------------------------------------- import
def load_reference_state(path: str | Path) -> dict[str, torch.Tensor]:
    """His state dict, read without running pickle code (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a foreign or corrupt file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a loadable weights-only PyTorch state dict ({first})") from exc
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{path}: expected a state dict of named tensors")
    return state


def _segments_in(state: dict[str, torch.Tensor], path: Path) -> tuple[dict[int, dict[str, torch.Tensor]], bool]:
    """His refiner tensors grouped by segment: {segment: {suffix: tensor}}, and whether the file
    was segmented (``refiner.segments.S.*``) rather than one refiner (``refiner.*``)."""
    segmented = any(k.startswith("refiner.segments.") for k in state)
    groups: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        if not key.startswith("refiner."):
            continue
        rest = key[len("refiner."):]
        if segmented:
            parts = rest.split(".", 2)
            if len(parts) < 3 or parts[0] != "segments" or not parts[1].isdigit():
                raise CheckpointError(f"{path}: tensor {key!r} does not fit the author's layout")
            groups.setdefault(int(parts[1]), {})[parts[2]] = tensor
        else:
            groups.setdefault(0, {})[rest] = tensor
    return groups, segmented


def import_reference(path: str | Path, preset: str, refiner: RefinerConfig | None = None) -> VQDraw:
    """Read his ``.pt`` checkpoint for `preset` (mnist, svhn, cifar10, celeba) into a VQDraw.

    K comes from the first-stage ``bias``, N from ``_stages``; the rest is the preset's, whose
    refiner rebuilds his layers (``refiner`` imports into another RefinerConfig instead, e.g. the
    paper's mask-after-every-convolution variant). Every tensor of his file must land on a vqdraw
    tensor of the same shape (else CheckpointError naming it); vqdraw tensors his layers lack are
    filled neutrally (see :func:`layer_differences`).
    """
    path = Path(path)
    get_preset(preset)  # ConfigError for an unknown preset
    state = load_reference_state(path)
    if "bias" not in state:
        raise CheckpointError(f"{path}: no first-stage 'bias' tensor: not one of the author's VQ-DRAW models")
    bias = state["bias"]
    shape = tuple(get_preset(preset).model.data_shape)
    if bias.dim() != 4 or tuple(bias.shape[1:]) != shape:
        raise CheckpointError(f"{path}: tensor 'bias' has shape {tuple(bias.shape)}; preset {preset} "
                              f"needs (K, {', '.join(map(str, shape))})")
    overrides = {"options": int(bias.shape[0]), "refiner": refiner}
    if "_stages" in state:
        stages = state["_stages"]
        if stages.numel() != 1 or int(stages.item()) < 1:
            raise CheckpointError(f"{path}: tensor '_stages' should be one positive count, got {stages.tolist()}")
        overrides["stages"] = int(stages.item())
    try:
        model = VQDraw.from_preset(preset, **overrides)
    except ValueError as exc:
        raise CheckpointError(f"{path}: does not fit preset {preset} ({exc})") from exc

    ours = model.state_dict()
    mapped: dict[str, torch.Tensor] = {"refiner.first_bias": bias}
    groups, segmented = _segments_in(state, path)
    expected = model.config.num_segments
    if sorted(groups) != list(range(expected)):
        found = f"{len(groups)} refiner(s)" if segmented else "one unsegmented refiner"
        raise CheckpointError(f"{path}: has {found}; preset {preset} with {model.stages} stages of "
                              f"{model.config.segment} per segment needs {expected}")
    table = key_table(preset, min(model.config.segment, model.stages))
    for seg, tensors in groups.items():
        his_prefix = f"refiner.segments.{seg}." if segmented else "refiner."
        for suffix, tensor in tensors.items():
            if suffix not in table:
                raise CheckpointError(f"{path}: tensor {his_prefix + suffix!r} has no place in the "
                                      f"author's {preset} layout")
            ours_key = f"refiner.segments.{seg}.{table[suffix]}"
            if ours_key not in ours:
                raise CheckpointError(f"{path}: tensor {his_prefix + suffix!r} maps to {ours_key!r}, "
                                      f"which this vqdraw {preset} model does not have")
            if tuple(tensor.shape) != tuple(ours[ours_key].shape):
                raise CheckpointError(f"{path}: tensor {his_prefix + suffix!r} has shape "
                                      f"{tuple(tensor.shape)}; {ours_key} needs {tuple(ours[ours_key].shape)}")
            mapped[ours_key] = tensor
    unknown = sorted(k for k in state if k not in ("bias", "_stages", "_grad_decay") and not k.startswith("refiner."))
    if unknown:
        raise CheckpointError(f"{path}: tensor {unknown[0]!r} has no place in the author's {preset} layout")

    for key, tensor in ours.items():
        if key in mapped:
            continue
        fill = _neutral_fill(key)
        if fill is None:
            raise CheckpointError(f"{path}: has no tensor for vqdraw's {key} (shape {tuple(tensor.shape)})")
        mapped[key] = torch.full_like(tensor, fill)
    model.load_state_dict({k: v.to(ours[k].dtype) for k, v in mapped.items()})
    return model


def _neutral_fill(key: str) -> float | None:
    """The value for a vqdraw tensor his layer lacks: a mask of ones; a GroupNorm's unit affine."""
    if key.endswith(".mask.masks"):
        return 1.0
    if key.endswith(".norm.weight"):
        return 1.0
    if key.endswith(".norm.bias"):
        return 0.0
    return None


@dataclass(frozen=True)
class Difference:
    """One place where a vqdraw model of a preset computes differently from his layer."""

    where: str
    """vqdraw module path relative to ``refiner.segments.S.``."""
    what: str
    exact: bool
    """True when the imported weights still give his numbers there (a mask filled with ones)."""


def layer_differences(model: VQDraw, preset: str) -> list[Difference]:
    """Where `model`'s refiner differs from his `preset` refiner: vqdraw tensors he lacks, and
    GroupNorms with another group count. Empty when the import reproduces his model exactly."""
    seg0 = model.refiner.segments[0]
    table = key_table(preset, min(model.config.segment, model.stages))
    covered = set(table.values())
    out: list[Difference] = []
    for key in seg0.state_dict():
        if key in covered:
            continue
        if key.endswith(".mask.masks"):
            out.append(Difference(key[: -len(".mask.masks")], "a stage mask his convolution lacks "
                                  "(imported as ones: the identity)", exact=True))
        elif key.endswith(".norm.weight"):
            out.append(Difference(key[: -len(".weight")], "a ReLU + GroupNorm his layer lacks "
                                  "(his output goes on raw)", exact=False))
    for where, groups in group_norms(preset).items():
        try:
            module = seg0.get_submodule(where)
        except AttributeError:
            continue
        if isinstance(module, nn.GroupNorm) and module.num_groups != groups:
            out.append(Difference(where, f"GroupNorm with {module.num_groups} groups over "
                                  f"{module.num_channels} channels; his has {groups}", exact=False))
    return out


# ---------------------------------------------------------------------------- published checkpoints
@dataclass(frozen=True)
class PublishedCheckpoint:
    """A checkpoint the author published: where it is and its pinned checksums."""

    preset: str
    url: str
    sha256: str
    md5: str  # what vqdraw.data.download checks while fetching; sha256 is checked after


PUBLISHED: dict[str, PublishedCheckpoint] = {
    "mnist": PublishedCheckpoint(
        "mnist",
        "https://raw.githubusercontent.com/unixpickle/vq-draw/official-release/pretrained/mnist_model.pt",
        "7d8e7780807d46003d6fb20cf589c3b7fe3d7849e9073d720c2f8bfcee2a41b8",
        "49dc4042811d76f32a057dad3ec03f6e",
    ),
}


def sha256sum(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def download_reference(preset: str, data_dir: str | Path | None = None, progress: bool = True,
                       timeout: float = 30.0) -> Path:
    """Fetch his published checkpoint for `preset` into ``<data dir>/reference/`` (kept there
    once its sha256 matches) and return its path."""
    from ..data import download as dl

    if preset not in PUBLISHED:
        raise CheckpointError(f"the author published no {preset} checkpoint vqdraw knows of; "
                              f"downloadable: {', '.join(PUBLISHED)}")
    pub = PUBLISHED[preset]
    root = Path(data_dir).expanduser() if data_dir is not None else dl.default_data_dir()
    dest = root / "reference" / Path(pub.url).name
    if dest.is_file() and sha256sum(dest) == pub.sha256:
        return dest
    try:
        dl.download_file(pub.url, dest, pub.md5, progress=progress, timeout=timeout)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = f"HTTP {exc.code} {exc.reason}" if isinstance(exc, urllib.error.HTTPError) else \
            (getattr(exc, "reason", None) or exc)
        raise CheckpointError(f"could not download {pub.url} ({reason}); fetch it yourself and run "
                              f"vqdraw import-reference FILE --preset {preset}") from exc
    got = sha256sum(dest)
    if got != pub.sha256:
        dest.unlink(missing_ok=True)
        raise CheckpointError(f"{pub.url}: sha256 {got} is not the pinned {pub.sha256}; file removed")
    return dest
