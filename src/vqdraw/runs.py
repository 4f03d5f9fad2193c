"""Model folders and run folders: every file name, one save/load, one fingerprint, the run lock.

A *model folder* holds one stored network: a JSON description and its safetensors weights

    config.json          {"format": ..., "version": ..., "model": {...}, ...}   (VQ-DRAW, VQ-VAE)
    model.safetensors

(the distilled encoder and the feature network use the same layout under their own file names,
see the ``Format`` constants of their modules). :func:`save` and :func:`load` write and read any of
them; loading checks the format name and version, that the weights are finite and fit the
network built from the description, and never unpickles anything.

A *run folder* is what training writes:

    run/
      .lock                  held (flock) by the one process writing into the folder
      LATEST                 the name of the newest checkpoint folder, directly inside run/
      ckpt-00001000/         a model folder + optimizer.safetensors + state.json
      train.json             {"train": ..., "model": ...}: how the run was configured
      metrics.jsonl          one JSON object per logged step

A checkpoint is written under a temporary name ``.ckpt-*``, renamed into place, then ``LATEST`` is
switched to it (one atomic rename). A crash leaves at worst temporary debris and a complete
checkpoint that ``LATEST`` does not name yet; :func:`clean_debris` (at the next start of a run)
removes the one and adopts the other.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .errors import CheckpointError, PathError, VQDrawError
from . import pretrained
from . import io
from .io import atomic_write_bytes, atomic_write_json, read_file_capped

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
LATEST_FILE = "LATEST"
TRAIN_FILE = "train.json"
METRICS_FILE = "metrics.jsonl"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
TRAINING_WEIGHTS_FILE = "training.safetensors"
"""In a checkpoint whose model is an average of the weights (EMA): the raw weights training resumes from."""
LOCK_FILE = ".lock"
CKPT_PREFIX = "ckpt-"
LATEST_MAX_BYTES = 4096
MAX_METRICS_BYTES = 64 << 20
"""metrics.jsonl is read whole on resume: about 200,000 logged rows (log_every bounds their number)."""
MAX_STEP = 10**12
"""The largest step a state.json may record (TrainConfig's bound on steps)."""
OWN_SUFFIXES = (".json", ".jsonl", ".safetensors")
_CKPT_NAME = re.compile(r"ckpt-(\d+)")


# ---------------------------------------------------------------------- one save/load
@dataclass(frozen=True)
class Format:
    """How one kind of network is stored: its format name and version, its two file names, and
    the key of the description under which its constructor's config lives."""

    name: str
    version: int
    key: str = "model"
    config_file: str = CONFIG_FILE
    weights_file: str = WEIGHTS_FILE
    min_version: int = 1


def describe(fmt: Format, config: dict, extra: dict | None = None) -> dict:
    """The JSON description stored beside the weights."""
    return {"format": fmt.name, "version": fmt.version, fmt.key: config, **(extra or {})}


def save(directory: str | Path, fmt: Format, config: dict, state: dict[str, torch.Tensor],
         extra: dict | None = None) -> Path:
    """Write the weights, then the description (whose presence marks a complete folder), each
    atomically, into `directory`."""
    from safetensors.torch import save as to_bytes

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    atomic_write_bytes(directory / fmt.weights_file, to_bytes(tensors))
    atomic_write_json(directory / fmt.config_file, describe(fmt, config, extra))
    return directory


def read_description(directory: str | Path, fmt: Format, what: str = "model") -> dict:
    """The checked description of a folder saved with `fmt` (format name and version)."""
    path = Path(directory) / fmt.config_file
    meta = read_json(path, f"unreadable {what} config")
    if not isinstance(meta, dict) or meta.get("format") != fmt.name or not isinstance(meta.get(fmt.key), dict):
        raise CheckpointError(f"{path}: not a vqdraw {what} config (format {fmt.name!r} expected)")
    version = meta.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{path}: the format version must be an integer, got {version!r}")
    if version > fmt.version:
        raise CheckpointError(f"{path}: written by a newer vqdraw (format version {version})")
    if version < fmt.min_version:
        raise CheckpointError(f"{path}: format version {version} is no longer readable (need {fmt.min_version})")
    return meta


def load(directory: str | Path, fmt: Format, build: Callable[[dict], torch.nn.Module],
         map_location: str | torch.device = "cpu", what: str = "model"):
    """(network, description) of a folder written by :func:`save`: ``build(description[fmt.key])``
    with the stored weights loaded (strictly). Every failure is a one-line CheckpointError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    meta = read_description(directory, fmt, what)
    try:
        module = build(meta[fmt.key])
    except VQDrawError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, RecursionError, OverflowError) as exc:
        raise CheckpointError(f"{directory / fmt.config_file}: invalid {what} config ({exc})") from exc
    path = directory / fmt.weights_file
    if not path.is_file():
        raise CheckpointError(f"{path}: unreadable weights (missing, or not a file)")
    try:  # safetensors says "No such file or directory" for a file it may not read: ask the OS first
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise CheckpointError(f"{path}: unreadable weights ({exc.strerror or exc})") from None
    try:
        state = load_file(str(path))
    except (OSError, SafetensorError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable weights ({exc})") from exc
    expected = module.state_dict()
    for name, tensor in state.items():
        want = expected.get(name)
        if want is not None and tensor.dtype != want.dtype:
            raise CheckpointError(f"{path}: {name} is stored as {str(tensor.dtype).removeprefix('torch.')}, "
                                  f"the network holds {str(want.dtype).removeprefix('torch.')}")
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit the config ({first})") from exc
    check_finite(module, path)
    return module.to(map_location), meta


def check_finite(module: torch.nn.Module, where: str | Path) -> None:
    """Refuse NaN or infinite weights and buffers (the normalisation buffers included)."""
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{where}: {name} holds NaN or infinite values")


def fingerprint(config: dict, state: dict[str, torch.Tensor]) -> bytes:
    """16 bytes naming one exact network: SHA-256 of its config (canonical JSON) and weights."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name, tensor in sorted(state.items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.digest()[:16]


def read_json(path: Path, problem: str, limit: int = 1 << 20):
    """Parse a small JSON file; any failure (missing, huge, too deeply nested, not UTF-8,
    malformed) is one line (:func:`vqdraw.io.read_json` with this module's wording)."""
    try:
        return io.read_json(path, "JSON", max_bytes=limit)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {problem} ({str(exc).removeprefix(f'{path}: ')})") from None


# ---------------------------------------------------------------------- run folders: reading
def resolve_model_dir(path: str | Path, fmt: Format | None = None) -> Path:
    """A model folder itself, the checkpoint folder a run folder's LATEST names, or the package
    folder of a shipped model (``pretrained:NAME``, :mod:`vqdraw.pretrained`)."""
    path = pretrained.resolve(path)
    config_file = fmt.config_file if fmt is not None else CONFIG_FILE
    if not path.exists():
        raise CheckpointError(f"{path}: no such model or run folder")
    if not path.is_dir():
        raise CheckpointError(f"{path}: expected a model or run folder, got a file")
    if (path / config_file).exists():
        return path
    target = read_latest(path)
    if target is None:
        raise CheckpointError(f"{path}: no {config_file} here and no checkpoint in this run folder")
    if not (target / config_file).exists():
        raise CheckpointError(f"{path}: LATEST points at {target.name}, which is missing or incomplete")
    return target


def read_latest(run_dir: str | Path) -> Path | None:
    """The checkpoint folder LATEST names (None without LATEST). LATEST must name a folder
    directly inside `run_dir`: no separators, no '..', no symlink leading out of it."""
    run_dir = Path(run_dir)
    latest = run_dir / LATEST_FILE
    if not latest.exists() and not latest.is_symlink():
        return None
    if latest.is_dir() or not latest.is_file():
        raise CheckpointError(f"{latest}: not a file")
    if latest.stat().st_size > LATEST_MAX_BYTES:
        raise CheckpointError(f"{latest}: larger than {LATEST_MAX_BYTES} bytes, not a checkpoint name")
    try:
        name = latest.read_bytes().decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{latest}: unreadable ({exc.__class__.__name__})") from exc
    bad = not name or name in (".", "..") or any(c in name for c in "/\\\0") or os.path.isabs(name)
    if bad:
        raise CheckpointError(f"{latest}: must name a checkpoint folder inside {run_dir}, got {name[:80]!r}")
    target = run_dir / name
    if target.resolve().parent != run_dir.resolve():
        raise CheckpointError(f"{latest}: {name!r} leads outside the run folder {run_dir}")
    if target.exists() and not target.is_dir():
        raise CheckpointError(f"{latest}: {name!r} is not a folder")
    return target


def holds_run(run_dir: str | Path) -> bool:
    """Whether `run_dir` already holds a run or a model (anything training would overwrite)."""
    run_dir = Path(run_dir)
    names = (LATEST_FILE, TRAIN_FILE, METRICS_FILE, CONFIG_FILE)
    return any((run_dir / n).exists() for n in names) or bool(checkpoints(run_dir))


def checkpoints(run_dir: str | Path) -> list[Path]:
    """The complete checkpoint folders of a run, oldest first (by step)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir()
             if (m := _CKPT_NAME.fullmatch(p.name)) and p.is_dir() and not p.is_symlink()]
    return [p for _, p in sorted(found)]


def find_checkpoint(run_dir: str | Path, wanted: bytes, fingerprint_of: Callable[[Path], bytes]) -> Path | None:
    """The checkpoint folder of a run whose model has fingerprint `wanted` (newest first), or
    None: which checkpoint made a ``.vqd`` file after the run went on past it."""
    for ckpt in reversed(checkpoints(run_dir)):
        try:
            if fingerprint_of(ckpt) == wanted:
                return ckpt
        except VQDrawError:
            continue
    return None


def read_train_json(path: str | Path) -> dict:
    """train.json of a run folder (how the run was configured)."""
    data = read_json(Path(path) / TRAIN_FILE, "run description unreadable")
    if not isinstance(data, dict) or not isinstance(data.get("train"), dict) or not isinstance(data.get("model"), dict):
        raise CheckpointError(f"{Path(path) / TRAIN_FILE}: not a vqdraw run description")
    return data


def write_train_json(run_dir: str | Path, train: dict, model: dict, **extra) -> None:
    atomic_write_json(Path(run_dir) / TRAIN_FILE, {"train": train, "model": model, **extra})


def run_dataset(path: str | Path) -> str | None:
    """The dataset a model was trained on, from train.json in its folder or the folder above."""
    path = pretrained.resolve(path)
    for folder in (path, path.parent):
        if (folder / TRAIN_FILE).exists():
            try:
                name = read_train_json(folder)["train"].get("dataset")
            except CheckpointError:
                return None
            return name if isinstance(name, str) else None
    return None


def owner_folder(directory: str | Path) -> Path:
    """The folder to lock before writing into `directory`: its run folder when it is a checkpoint."""
    directory = Path(directory)
    if _CKPT_NAME.fullmatch(directory.name) and (directory.parent / LATEST_FILE).exists():
        return directory.parent
    return directory


# ---------------------------------------------------------------------- metrics.jsonl
def read_metrics(run_dir: str | Path, upto: int | None = None) -> list[dict]:
    """The rows of metrics.jsonl with ``step <= upto`` (all when None). Rows past `upto` (logged
    after the checkpoint a resume starts from) and lines cut short by a crash are dropped from
    the file too, by writing the kept rows to a new file and renaming it over the old one: a kill
    at any moment leaves the old file or the new one, never an empty or half-written one."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists() and not path.is_symlink():
        return []
    _refuse_link(path)
    text = read_file_capped(path, MAX_METRICS_BYTES, "metrics file").decode("utf-8", errors="replace")
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            continue  # a line cut short by a crash, or not a vqdraw row
        if _metrics_row(row) and (upto is None or row["step"] <= upto):
            rows.append(row)
    kept = "".join(json.dumps(r) + "\n" for r in rows)
    if kept != text:
        atomic_write_bytes(path, kept.encode())
    return rows


def _metrics_row(row) -> bool:
    """A row vqdraw wrote: an object whose step is a whole number >= 0 and whose values are numbers."""
    if not isinstance(row, dict) or len(row) > 256:
        return False
    step = row.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= MAX_STEP:
        return False
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row.values())


def append_metrics(run_dir: str | Path, record: dict) -> None:
    """Append one row; metrics.jsonl must be a regular file of the run folder (a symlink is
    never followed out of it)."""
    path = Path(run_dir) / METRICS_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
    except OSError as exc:
        if path.is_symlink():
            _refuse_link(path)
        raise
    with os.fdopen(fd, "a") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PathError(f"{path}: not a regular file; a run folder's metrics must be a regular file")
        f.write(json.dumps(record) + "\n")


def _refuse_link(path: Path) -> None:
    if path.is_symlink():
        raise PathError(f"{path}: is a symbolic link; a run folder's files must be its own "
                        "(remove the link to continue)")


def writes_into(target: str | Path, folder: str | Path) -> bool:
    """Whether writing the file `target` would replace one of the model or run folder `folder`'s
    own files: its descriptions and weights (``*.json``, ``*.jsonl``, ``*.safetensors``),
    ``LATEST``, ``.lock``, or anything inside a checkpoint folder (of its run, for a checkpoint)."""
    try:
        t, f = Path(target).resolve(), Path(folder).resolve()
    except (OSError, RuntimeError):
        return False
    roots = [f, f.parent] if _CKPT_NAME.fullmatch(f.name) else [f]
    for root in roots:
        if t == root:
            return True
        try:
            rel = t.relative_to(root)
        except ValueError:
            continue
        if any(_CKPT_NAME.fullmatch(part) or part.startswith(f".{CKPT_PREFIX}") for part in rel.parts[:-1]):
            return True
        if len(rel.parts) == 1 and (rel.name in (LATEST_FILE, LOCK_FILE) or rel.suffix in OWN_SUFFIXES
                                    or _CKPT_NAME.fullmatch(rel.name)):
            return True
    return False


# ---------------------------------------------------------------------- checkpoints
def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer's state dict into tensors (for safetensors) and plain JSON data."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"{pid}.{key}"] = val.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, val in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = val
    for name, val in meta.get("scalars", {}).items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = val
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(run_dir: str | Path, model, optimizer, state: dict, keep: int = 2,
                    training_weights: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``ckpt-<step>/`` (``model.save`` + optimizer + `state`) atomically, point LATEST at
    it, and keep the newest `keep` checkpoints, and every older one that holds keepsakes (a prior
    or a distilled encoder written beside its weights: :func:`holds_keepsakes`). `training_weights`
    (the raw weights, when `model` holds an average of them) go to ``training.safetensors``."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    name = f"{CKPT_PREFIX}{int(state['step']):08d}"
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".{name}."))
    try:
        model.save(tmp)
        tensors, meta = optimizer_tensors(optimizer)
        save_file(tensors, str(tmp / OPTIMIZER_FILE))
        if training_weights is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in training_weights.items()},
                      str(tmp / TRAINING_WEIGHTS_FILE))
        atomic_write_json(tmp / STATE_FILE, {**state, "optimizer": meta})
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        final = run_dir / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _point_latest(run_dir, name)
    old = [p for p in checkpoints(run_dir) if p.name != name and not holds_keepsakes(p)]
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


CHECKPOINT_FILES = frozenset({CONFIG_FILE, WEIGHTS_FILE, OPTIMIZER_FILE, TRAINING_WEIGHTS_FILE, STATE_FILE})
"""What :func:`save_checkpoint` writes into a checkpoint folder."""


def holds_keepsakes(ckpt: str | Path) -> bool:
    """Whether a checkpoint folder holds files that training did not write there (a prior, a
    distilled encoder: made for exactly these weights, and needed to decode what was coded with
    them). Rotation keeps such a checkpoint; ``--overwrite`` still clears it."""
    try:
        return any(not p.name.startswith(".") and p.name not in CHECKPOINT_FILES for p in Path(ckpt).iterdir())
    except OSError:
        return False


def load_checkpoint_state(run_dir: str | Path) -> tuple[Path, dict, dict]:
    """(checkpoint folder, state.json contents, optimizer tensors) of a run's newest checkpoint."""
    from safetensors.torch import load_file

    ckpt = read_latest(run_dir)
    if ckpt is None:
        raise CheckpointError(f"{run_dir}: nothing to resume (no checkpoint in this folder)")
    if not ckpt.is_dir():
        raise CheckpointError(f"{run_dir}: LATEST points at {ckpt.name}, which is missing or incomplete")
    state = read_json(ckpt / STATE_FILE, "cannot resume, training state unreadable")
    check_state(state, ckpt / STATE_FILE)
    path = ckpt / OPTIMIZER_FILE
    try:
        _check_regular(path)
        tensors = load_file(str(path))
    except VQDrawError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure here means a corrupt checkpoint
        raise CheckpointError(f"{path}: cannot resume, optimizer state unreadable ({exc})") from exc
    if any(t.is_floating_point() and not bool(torch.isfinite(t).all()) for t in tensors.values()):
        raise CheckpointError(f"{path}: holds NaN or infinite values")
    if state["step"] > 0 and not tensors:
        raise CheckpointError(f"{path}: empty, but the run has taken {state['step']} steps (the "
                              "optimizer's moments are lost)")
    return ckpt, state, tensors


def check_state(state, where: str | Path) -> None:
    """Refuse a state.json that training did not write: ``step`` a whole number in
    [0, MAX_STEP]; ``time_spent`` finite and >= 0; the optimizer's ``param_groups`` with finite
    ``lr`` >= 0, ``eps`` > 0, ``betas`` in [0, 1) and integer ``params``; numeric ``scalars``."""
    import math

    def bad(msg):
        raise CheckpointError(f"{where}: {msg}; not a vqdraw training state")

    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if not isinstance(state, dict):
        bad("not an object")
    step = state.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= MAX_STEP:
        bad(f"step must be a whole number in 0..{MAX_STEP}, got {step!r:.40}")
    if "time_spent" in state and not (number(state["time_spent"]) and state["time_spent"] >= 0):
        bad("time_spent must be a finite number of seconds >= 0")
    opt = state.get("optimizer")
    if not isinstance(opt, dict) or not isinstance(opt.get("param_groups"), list) or not opt["param_groups"]:
        bad("optimizer.param_groups missing")
    for group in opt["param_groups"]:
        if not isinstance(group, dict):
            bad("an optimizer param group is not an object")
        betas = group.get("betas", (0.9, 0.999))
        if not (isinstance(betas, list) and len(betas) == 2 and all(number(b) and 0 <= b < 1 for b in betas)):
            bad(f"optimizer betas must be two numbers in [0, 1), got {betas!r:.60}")
        for key, low, strict in (("lr", 0, False), ("eps", 0, True), ("weight_decay", 0, False)):
            v = group.get(key, 1 if strict else 0)
            if not number(v) or v < low or (strict and v == low):
                bad(f"optimizer {key} must be a finite number {'>' if strict else '>='} {low}, got {v!r:.40}")
        params = group.get("params")
        if not isinstance(params, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                                   for i in params):
            bad("optimizer params must be a list of whole numbers")
    scalars = opt.get("scalars", {})
    if not isinstance(scalars, dict) or not all(number(v) for v in scalars.values()):
        bad("optimizer scalars must be numbers")


def check_optimizer_tensors(tensors: dict[str, torch.Tensor], params: list[torch.Tensor], where) -> None:
    """Refuse optimizer tensors that do not fit the parameters: names ``<index>.<key>`` with an
    index of a parameter, moments of the parameter's shape and dtype, a one-element ``step``."""
    for name, t in tensors.items():
        pid, _, key = name.partition(".")
        if not pid.isdigit() or int(pid) >= len(params) or not key:
            raise CheckpointError(f"{where}: {name!r} names no parameter of this model")
        p = params[int(pid)]
        if key == "step":
            ok = t.numel() == 1 and t.is_floating_point()
        else:
            ok = tuple(t.shape) == tuple(p.shape) and t.dtype == p.dtype
        if not ok:
            raise CheckpointError(f"{where}: {name} has shape {tuple(t.shape)} and dtype "
                                  f"{str(t.dtype).removeprefix('torch.')}, which do not fit parameter {pid} "
                                  f"{tuple(p.shape)}")


def _check_regular(path: Path) -> None:
    from .io import check_input_file

    try:
        check_input_file(path, "checkpoint file")
    except PathError as exc:
        raise CheckpointError(str(exc)) from None


def load_training_weights(ckpt: str | Path) -> dict[str, torch.Tensor] | None:
    """The raw weights of a checkpoint whose model is their average, or None if it has none."""
    from safetensors.torch import load_file

    path = Path(ckpt) / TRAINING_WEIGHTS_FILE
    if not path.exists():
        return None
    try:
        _check_regular(path)
        tensors = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - any failure here means a corrupt checkpoint
        raise CheckpointError(f"{path}: cannot resume, raw weights unreadable ({exc})") from exc
    if any(t.is_floating_point() and not bool(torch.isfinite(t).all()) for t in tensors.values()):
        raise CheckpointError(f"{path}: holds NaN or infinite values")
    return tensors


def clean_debris(run_dir: str | Path, verify: Callable[[Path], object] | None = None) -> Path | None:
    """Tidy a run folder after a crash, at the start of a run (the caller holds its lock):
    temporary checkpoint folders and temporary files are removed, and a complete checkpoint newer
    than the one LATEST names is adopted if ``verify(folder)`` accepts it (does not raise), else
    removed. Returns the checkpoint adopted, if any."""
    run_dir = Path(run_dir)
    for p in run_dir.iterdir():
        if p.name.startswith(f".{CKPT_PREFIX}") and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.startswith(".") and p.name.endswith(".tmp") and (p.is_file() or p.is_symlink()):
            p.unlink(missing_ok=True)
    current = read_latest(run_dir)
    current_step = _step_of(current) if current is not None and current.is_dir() else -1
    for ckpt in reversed(checkpoints(run_dir)):
        if _step_of(ckpt) <= current_step:
            break
        try:
            _verify_checkpoint(ckpt)
            if verify is not None:
                verify(ckpt)
        except (VQDrawError, OSError, ValueError):
            shutil.rmtree(ckpt, ignore_errors=True)
            continue
        _point_latest(run_dir, ckpt.name)
        return ckpt
    return None


def clear_run(run_dir: str | Path, extra: tuple[str, ...] = ()) -> None:
    """Remove what a run wrote (checkpoints, LATEST, train.json, metrics.jsonl, a saved model and
    the files or folders named in `extra`) so that a fresh run can start; other files are left alone."""
    run_dir = Path(run_dir)
    for p in checkpoints(run_dir):
        shutil.rmtree(p)
    names = (LATEST_FILE, TRAIN_FILE, METRICS_FILE, CONFIG_FILE, WEIGHTS_FILE, *extra)
    for name in names:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _verify_checkpoint(ckpt: Path) -> None:
    from safetensors.torch import load_file

    read_json(ckpt / CONFIG_FILE, "unreadable model config")
    read_json(ckpt / STATE_FILE, "unreadable training state")
    for name in (WEIGHTS_FILE, OPTIMIZER_FILE):
        try:
            _check_regular(ckpt / name)
            tensors = load_file(str(ckpt / name))
        except Exception as exc:  # noqa: BLE001 - unreadable means incomplete
            raise CheckpointError(f"{ckpt / name}: unreadable ({exc})") from exc
        if any(t.is_floating_point() and not bool(torch.isfinite(t).all()) for t in tensors.values()):
            raise CheckpointError(f"{ckpt / name}: holds NaN or infinite values")


def _step_of(ckpt: Path) -> int:
    m = _CKPT_NAME.fullmatch(ckpt.name)
    return int(m.group(1)) if m else -1


def _point_latest(run_dir: Path, name: str) -> None:
    atomic_write_bytes(run_dir / LATEST_FILE, (name + "\n").encode())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------------- the lock
class RunLock:
    """An exclusive lock on a folder for the one process writing into it (``with RunLock(d):``).

    ``fcntl.flock`` on ``<folder>/.lock``, which records the holder (pid, host, start time). The
    kernel releases the lock when the holder exits in any way, so the lock of a dead process is
    simply taken over. A second writer gets a :class:`VQDrawError` naming the holder.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        import fcntl

        if self.folder.exists() and not self.folder.is_dir():
            raise CheckpointError(f"{self.folder}: is a file; a run folder must be a folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_FILE
        if path.is_symlink():
            raise PathError(f"{path}: is a symbolic link; the lock of a run folder must be its own file "
                            "(remove the link)")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PathError(f"{path}: not a regular file; the lock of a run folder must be a file")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise VQDrawError(f"{self.folder} is in use by another vqdraw process ({holder}); "
                              "wait for it to finish or use another folder") from None
        except BaseException:
            os.close(fd)
            raise
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started})
        os.ftruncate(fd, 0)
        os.pwrite(fd, (info + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.ftruncate(fd, 0)
            finally:
                os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"pid {int(info['pid'])} on {str(info['host'])[:100]}, started {str(info['started'])[:40]}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


__all__ = [
    "CONFIG_FILE", "WEIGHTS_FILE", "LATEST_FILE", "TRAIN_FILE", "METRICS_FILE", "OPTIMIZER_FILE",
    "STATE_FILE", "LOCK_FILE", "Format", "RunLock", "save", "load", "describe", "read_description",
    "fingerprint", "check_finite", "resolve_model_dir", "read_latest", "holds_run", "checkpoints",
    "read_train_json", "write_train_json", "run_dataset", "owner_folder", "read_metrics",
    "append_metrics", "save_checkpoint", "load_checkpoint_state", "clean_debris", "clear_run",
    "optimizer_tensors", "restore_optimizer", "writes_into", "check_state", "check_optimizer_tensors",
    "holds_keepsakes", "CHECKPOINT_FILES",
]
