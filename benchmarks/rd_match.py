"""Bits JPEG and WebP need for VQ-DRAW's quality, from a `vqdraw eval` report, as JSON.

    vqdraw eval pretrained:fashion --count 1000 -o runs/fashion-eval
    python benchmarks/rd_match.py runs/fashion-eval/rd.json

For each VQ-DRAW point (every code prefix, whole `.vqd` files), the bits per image that JPEG and
WebP (whole files, one per image) need for the same PSNR of the mean MSE, interpolated linearly in
log(bits) between the two qualities around it (null where the codec never gets that low in PSNR
at its smallest file, or never that high), and their ratio to VQ-DRAW's bits.
"""

from __future__ import annotations

import argparse
import json
import math


def bits_at(curve: dict, psnr: float) -> float | None:
    """The curve's bits per image at ``psnr`` (log-linear between its points), None outside it."""
    points = sorted((p, b) for p, b in zip(curve["results"]["psnr-of-mean-mse"], curve["results"]["bits_per_image"])
                    if p is not None)
    for (p0, b0), (p1, b1) in zip(points, points[1:]):
        if p0 <= psnr <= p1:
            t = 0.0 if p1 == p0 else (psnr - p0) / (p1 - p0)
            return math.exp(math.log(b0) + t * (math.log(b1) - math.log(b0)))
    return None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("report", help="rd.json written by vqdraw eval")
    p.add_argument("--vqdraw", default="VQ-DRAW (.vqd file, one image)",
                   help="the VQ-DRAW curve to match (default: whole files of one image, like JPEG/WebP's)")
    args = p.parse_args(argv)
    report = json.loads(open(args.report).read())
    curves = {c["name"]: c for c in report["curves"]}
    vq = curves[args.vqdraw]["results"]
    rows = []
    for stages, bits, psnr in zip(vq["stages"], vq["bits_per_image"], vq["psnr-of-mean-mse"]):
        row = {"stages": stages, "vqdraw_bits": round(bits, 1), "psnr": round(psnr, 2)}
        for codec in ("JPEG", "WebP"):
            need = bits_at(curves[codec], psnr)
            row[f"{codec}_bits"] = None if need is None else round(need, 1)
            row[f"{codec}_ratio"] = None if need is None else round(need / bits, 2)
        rows.append(row)
    print(json.dumps({"report": args.report, "count": report["count"], "curve": args.vqdraw, "rows": rows},
                     indent=2))


if __name__ == "__main__":
    main()
