"""Bits JPEG and WebP need for VQ-DRAW's quality, from a `vqdraw eval` report, as JSON.

    vqdraw eval pretrained:fashion --count 1000 -o runs/fashion-eval
    python benchmarks/rd_match.py runs/fashion-eval/rd.json

For each VQ-DRAW point (every code prefix; as whole `.vqd` files of one image, as one file of all
the images, and as the bare code), the bits per image that JPEG and WebP (whole files, and their
entropy-coded data without headers) need for the same PSNR of the mean MSE, interpolated linearly
in log(bits) between the two qualities around it, and their ratio to VQ-DRAW's bits. Where even
the codec's smallest file is better than that PSNR, its size is reported as "at most" (the codec
offers nothing smaller).
"""

from __future__ import annotations

import argparse
import json
import math


def bits_at(curve: dict, psnr: float) -> tuple[float | None, str]:
    """The curve's bits per image at ``psnr``: log-linear between its points ("interpolated"); its
    smallest file when even that is better ("at most": the codec cannot go lower); None above the
    curve."""
    points = sorted((p, b) for p, b in zip(curve["results"]["psnr-of-mean-mse"], curve["results"]["bits_per_image"])
                    if p is not None)
    if not points:
        return None, "none"
    if psnr <= points[0][0]:
        return min(b for _, b in points), "at most"
    for (p0, b0), (p1, b1) in zip(points, points[1:]):
        if p0 <= psnr <= p1:
            t = 0.0 if p1 == p0 else (psnr - p0) / (p1 - p0)
            return math.exp(math.log(b0) + t * (math.log(b1) - math.log(b0))), "interpolated"
    return None, "above the curve"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("report", help="rd.json written by vqdraw eval")
    args = p.parse_args(argv)
    report = json.loads(open(args.report).read())
    curves = {c["name"]: c for c in report["curves"]}
    rows = []
    for vq_name in ("VQ-DRAW (.vqd file, one image)", "VQ-DRAW (.vqd file, all images)", "VQ-DRAW"):
        vq = curves[vq_name]["results"]
        for stages, bits, psnr in zip(vq["stages"], vq["bits_per_image"], vq["psnr-of-mean-mse"]):
            row = {"vqdraw": vq_name, "stages": stages, "vqdraw_bits": round(bits, 1), "psnr": round(psnr, 2)}
            for codec in ("JPEG", "WebP", "JPEG (no headers)", "WebP (no headers)"):
                need, how = bits_at(curves[codec], psnr)
                row[codec] = None if need is None else {"bits": round(need, 1), "how": how,
                                                        "ratio": round(need / bits, 2)}
            rows.append(row)
    print(json.dumps({"report": args.report, "count": report["count"], "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
