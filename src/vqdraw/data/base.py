"""The one shape every dataset reader returns: uint8 images plus optional labels."""

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
class ImageSet:
    """A split of a dataset held as uint8 in memory (or memory-mapped).

    images: (N, H, W, C) uint8, channels last as files store them.
    labels: (N,) int64, or None where the format has no labels.
    """

    images: np.ndarray
    labels: np.ndarray | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise DatasetError(
                f"{self.name or 'dataset'}: expected uint8 images of shape (N, H, W, C), "
                f"got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels is not None and len(self.labels) != len(self.images):
            raise DatasetError(
                f"{self.name or 'dataset'}: {len(self.images)} images but {len(self.labels)} labels"
            )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W), the shape a model sees."""
        _, h, w, c = self.images.shape
        return (c, h, w)

    def batch(self, index, device: torch.device | str = "cpu") -> torch.Tensor:
        """Images at `index` as float NCHW in [0, 1] on `device`.

        The uint8 → float conversion happens on the device, so only bytes cross the bus.
        """
        idx = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index)
        raw = torch.from_numpy(np.ascontiguousarray(self.images[idx])).to(device)
        # standard NCHW strides (a permuted view with C=1 would look channels-last to the kernels)
        return raw.permute(0, 3, 1, 2).float().div_(255.0).clone(memory_format=torch.contiguous_format)

    def subset(self, index) -> "ImageSet":
        idx = np.asarray(index)
        return ImageSet(
            self.images[idx], None if self.labels is None else self.labels[idx], self.name
        )
