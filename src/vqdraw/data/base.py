"""The one shape every dataset reader returns: uint8 items (images, sequences, voxel grids, clips) plus optional labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import VQDrawError


class DatasetError(VQDrawError):
    """A dataset is missing, corrupt or not in the expected format.

    The message is meant for a person: it names the file and what is wrong.
    """


@dataclass
class Dataset:
    """A split of a dataset held as uint8 in memory (or memory-mapped).

    data: (N, *S, C) uint8, channels last as files store them: (N, H, W, C) images, (N, L, C)
        sequences (text, audio), (N, D, H, W, C) volumes (voxel occupancy stored as 0 / 255, so
        :meth:`batch` gives 0.0 / 1.0).
    labels: (N,) int64, or None where the format has no labels.
    """

    data: np.ndarray
    labels: np.ndarray | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if not 3 <= self.data.ndim <= 5 or self.data.dtype != np.uint8:
            raise DatasetError(
                f"{self.name or 'dataset'}: expected uint8 items of shape (N, H, W, C) (images), "
                f"(N, L, C) or (N, D, H, W, C), "
                f"got {self.data.dtype} {tuple(self.data.shape)}"
            )
        if self.labels is not None and len(self.labels) != len(self.data):
            raise DatasetError(
                f"{self.name or 'dataset'}: {len(self.data)} items but {len(self.labels)} labels"
            )

    def __len__(self) -> int:
        return len(self.data)

    @property
    def data_shape(self) -> tuple[int, ...]:
        """(C, *S), e.g. (C, H, W) for images: the shape a model sees (channels first)."""
        return (self.data.shape[-1], *self.data.shape[1:-1])

    def batch(self, index, device: torch.device | str = "cpu") -> torch.Tensor:
        """Items at `index` as float (B, C, *S) in [0, 1] on `device` (NCHW for images).

        The uint8 → float conversion happens on the device, so only bytes cross the bus.
        """
        idx = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index)
        raw = torch.from_numpy(np.ascontiguousarray(self.data[idx])).to(device)
        # standard NCHW strides (a permuted view with C=1 would look channels-last to the kernels)
        order = (0, raw.dim() - 1, *range(1, raw.dim() - 1))  # channels last -> channels first
        return raw.permute(*order).float().div_(255.0).clone(memory_format=torch.contiguous_format)

    def subset(self, index) -> "Dataset":
        idx = np.asarray(index)
        return Dataset(
            self.data[idx], None if self.labels is None else self.labels[idx], self.name
        )
