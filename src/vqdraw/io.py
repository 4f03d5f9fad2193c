"""Files that must never be half-written: atomic writes, and training checkpoints.

A training checkpoint is a folder ``ckpt-<step>/`` inside the run folder holding
``config.json`` + ``model.safetensors`` (a complete model, loadable by ``VQDraw.load``),
``optimizer.safetensors`` (Adam's moment tensors) and ``state.json`` (step, train config,
optimizer hyper-parameters). It is written under a temporary name, renamed into place, and only
then is ``LATEST`` switched to it (one atomic rename). No pickle anywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .errors import CheckpointError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


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


def save_checkpoint(run_dir: Path, model, optimizer, state: dict, keep: int = 2) -> Path:
    """Write checkpoint folder ``ckpt-<step>`` atomically and point LATEST at it."""
    from safetensors.torch import save_file

    from .model import LATEST_FILE

    run_dir = Path(run_dir)
    name = f"ckpt-{int(state['step']):08d}"
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".{name}."))
    try:
        model.save(tmp)
        tensors, meta = optimizer_tensors(optimizer)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        atomic_write_json(tmp / "state.json", {**state, "optimizer": meta})
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        final = run_dir / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_bytes(run_dir / LATEST_FILE, (name + "\n").encode())
    old = sorted(p for p in run_dir.glob("ckpt-*") if p.is_dir() and p.name != name)
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def load_checkpoint_state(run_dir: Path) -> tuple[Path, dict, dict]:
    """(checkpoint folder, state.json contents, optimizer tensors) of a run's newest checkpoint."""
    from safetensors.torch import load_file

    from .model import resolve_model_dir

    ckpt = resolve_model_dir(run_dir)
    try:
        state = json.loads((ckpt / "state.json").read_text())
        tensors = load_file(str(ckpt / "optimizer.safetensors"))
    except Exception as exc:  # noqa: BLE001 - any failure here means a corrupt checkpoint
        raise CheckpointError(f"{ckpt}: cannot resume, training state unreadable ({exc})") from exc
    return ckpt, state, tensors
