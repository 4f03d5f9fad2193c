"""TensorBoard logging beside metrics.jsonl: an ``on_log`` callback for :func:`vqdraw.fit`.

    from vqdraw.training.tensorboard import TensorBoardLog
    with TensorBoardLog("runs/mnist/tensorboard") as log:
        fit(model, train, test, cfg, "runs/mnist", on_log=log)

Every number of a logged record (loss terms, learning rate, entropy, test MSE/PSNR when it was
evaluated) becomes a scalar at the record's step. Needs the ``tensorboard`` package (the extra
``pip install "vqdraw[tensorboard]"``); ``fit(on_log=...)`` takes any other callable the same way.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from ..errors import InputError


def _summary_writer(log_dir: str):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # torch's module needs the tensorboard package
        raise InputError('TensorBoard logging needs the tensorboard package: pip install "vqdraw[tensorboard]"') from exc
    return SummaryWriter(log_dir=log_dir)


class TensorBoardLog:
    """``log(record)`` writes the record's finite numbers as scalars at ``record["step"]``."""

    def __init__(self, log_dir: str | Path, writer_factory: Callable[[str], object] = _summary_writer):
        self.log_dir = Path(log_dir)
        self.writer = writer_factory(str(self.log_dir))

    def __call__(self, record: dict) -> None:
        step = int(record["step"])
        for key, value in record.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

    def __enter__(self) -> "TensorBoardLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
