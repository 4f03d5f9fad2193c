"""Synthetic occupancy grids for trying the voxel models: random spheres, boxes and tori.

    python benchmarks/voxel_solids.py OUT.npy --count 600 --size 32 --seed 0

Writes one bool array (count, size, size, size) that ``vqdraw train --dataset voxels:OUT.npy``
reads. These are generated solids, not scanned or modelled objects: a stand-in where no
ModelNet grids are at hand (docs/volumes.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def solids(count: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    axis = (np.arange(size) + 0.5) / size  # voxel centres in [0, 1]
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    out = np.zeros((count, size, size, size), dtype=bool)
    for i in range(count):
        kind = i % 3
        centre = rng.uniform(0.3, 0.7, size=3)
        px, py, pz = x - centre[0], y - centre[1], z - centre[2]
        if kind == 0:  # sphere
            r = rng.uniform(0.12, 0.3)
            out[i] = px**2 + py**2 + pz**2 <= r**2
        elif kind == 1:  # axis-aligned box
            half = rng.uniform(0.08, 0.28, size=3)
            out[i] = (abs(px) <= half[0]) & (abs(py) <= half[1]) & (abs(pz) <= half[2])
        else:  # torus around a random axis
            R, r = rng.uniform(0.14, 0.25), rng.uniform(0.04, 0.09)
            a, b, c = [(px, py, pz), (py, pz, px), (pz, px, py)][rng.integers(3)]
            out[i] = (np.sqrt(a**2 + b**2) - R) ** 2 + c**2 <= r**2
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("output")
    p.add_argument("--count", type=int, default=600)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    Path(a.output).parent.mkdir(parents=True, exist_ok=True)
    np.save(a.output, solids(a.count, a.size, a.seed))


if __name__ == "__main__":
    main()
