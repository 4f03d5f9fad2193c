"""How far bf16 autocast encoding drifts from float32 on a trained model.

    python benchmarks/bf16_agreement.py runs/mnist --device cuda --count 2000

Encodes the first ``--count`` test images twice, in float32 and under bfloat16 autocast (the
per-option losses and the arg-min stay float32 either way), and reports: the fraction of codes
that agree, per stage and over whole codes; the first stage where they differ; and the
reconstruction MSE (normalised, paper units) of each, both decoded in float32.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="trained model or run folder")
    p.add_argument("--dataset", default=None, help="test images from this dataset (default: the run's)")
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--batch", type=int, default=500)
    C.add_common_args(p)
    args = p.parse_args(argv)
    device = C.setup(args)

    from vqdraw import VQDraw
    from vqdraw.baselines import run_dataset
    from vqdraw.data import load_dataset
    from vqdraw.training.train import autocast

    model = VQDraw.load(args.model, map_location=device).eval()
    test = load_dataset(args.dataset or run_dataset(args.model) or "mnist-embedded", "test")
    x = test.batch(range(min(args.count, len(test))), device)
    c32, c16, m32, m16 = [], [], 0.0, 0.0
    for chunk in x.split(args.batch):
        a = model.encode(chunk, return_reconstruction=True)
        with autocast("bf16", device):
            b = model.encode(chunk)
        target = model.target(chunk)
        rb = model.decode(b)  # float32 decode of the bf16 codes
        m32 += (model.target(a.reconstruction) - target).pow(2).flatten(1).mean(1).sum().item()
        m16 += (model.target(rb) - target).pow(2).flatten(1).mean(1).sum().item()
        c32.append(a.codes.cpu())
        c16.append(b.cpu())
    c32, c16 = torch.cat(c32), torch.cat(c16)
    same = c32 == c16
    first_diff = torch.where(same.all(1), same.shape[1], (~same).float().argmax(1))
    n = len(c32)
    C.emit({
        "benchmark": "bf16_agreement",
        "model": str(args.model),
        "images": n,
        "codes_equal_fraction": same.all(1).float().mean().item(),
        "per_stage_equal_fraction": same.float().mean(0).tolist(),
        "median_first_differing_stage": first_diff.float().median().item(),
        "recon_mse_fp32": m32 / n,
        "recon_mse_bf16_codes": m16 / n,
        "env": C.environment(device),
    })


if __name__ == "__main__":
    main()
