"""Tables for docs/prior.md from the outputs of `vqdraw prior`, `eval --prior`, `eval-nll --prior`
and `eval-samples --prior` on one model folder, plus what only Python can say (how often the 3/4
cap on a code's probability binds).

    python benchmarks/prior_report.py MODEL_DIR EVAL_DIR NLL_DIR SAMPLES_DIR [DATASET]
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def main(model_dir: str, eval_dir: str, nll_dir: str, samples_dir: str, dataset: str = "mnist-embedded") -> None:
    meta = json.loads((Path(model_dir) / "prior.json").read_text())
    test = meta["test"]
    K = meta["prior"]["options"]
    print(f"prior: {meta['training']['steps']} steps (best held-out step {meta['training']['best_step']}), "
          f"{meta['training']['seconds']:.0f} s, {meta['training']['train_items']} train codes")
    print("\n| stage | " + " | ".join(str(i + 1) for i in range(len(test["stage_bits"]))) + " | total |")
    print("|---|" + "---|" * (len(test["stage_bits"]) + 1))
    print("| test cross-entropy (bits) | " + " | ".join(f"{b:.2f}" for b in test["stage_bits"])
          + f" | {test['bits']:.2f} |")
    print(f"| uniform (log2 K) | " + " | ".join(f"{math.log2(K):.2f}" for _ in test["stage_bits"])
          + f" | {test['uniform_bits']:.2f} |")

    rd = json.loads((Path(eval_dir) / "rd.json").read_text())
    curves = {c["name"]: c["results"] for c in rd["curves"]}
    fixed, coded = curves["VQ-DRAW"], curves["VQ-DRAW (entropy-coded .vqd file, all images)"]
    allfile = curves["VQ-DRAW (.vqd file, all images)"]
    print(f"\n{rd['count']} test images, one file each way:\n")
    print("| stages n | n·log2 K | fixed-length file (bits/image) | entropy-coded file (bits/image) | its payload "
          "| prior cross-entropy | payload / cross-entropy | saved vs n·log2 K | PSNR (dB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i, n in enumerate(fixed["stages"]):
        pay, ce = coded["payload_bits_per_image"][i], coded["cross_entropy_bits"][i]
        print(f"| {n} | {fixed['bits_per_image'][i]} | {allfile['bits_per_image'][i]:.2f} | "
              f"{coded['bits_per_image'][i]:.2f} | {pay:.2f} | {ce:.2f} | {pay / ce:.4f} | "
              f"{100 * (1 - coded['bits_per_image'][i] / fixed['bits_per_image'][i]):.1f}% | "
              f"{fixed['psnr-rgb'][i]:.2f} |")

    nll = json.loads((Path(nll_dir) / "nll.json").read_text())
    print("\n| stages n | single, uniform (bits/dim) | single, prior | marginal, uniform | marginal, prior "
          "| n ln K (nats) | −ln p(c*) (nats) |")
    print("|---|---|---|---|---|---|---|")
    for r in nll["rows"]:
        print(f"| {r['stages']} | {r['bits_per_dim_single']:.4f} | {r['bits_per_dim_single_prior']:.4f} | "
              f"{r['bits_per_dim_marginal']:.4f} | {r['bits_per_dim_marginal_prior']:.4f} | "
              f"{r['nats_code']:.2f} | {r['nats_code_prior']:.2f} |")

    for path in sorted(Path(samples_dir).glob("*/eval-samples.json")) or [Path(samples_dir) / "eval-samples.json"]:
        s = json.loads(path.read_text())
        q = s["prior_samples"]
        print(f"\n{path.parent.name}: {s['count']} samples each, feature net test accuracy "
              f"{s['feature_net_test_accuracy']:.4f}\n")
        print("| samples | FID | KID | precision | recall | classifier score |")
        print("|---|---|---|---|---|---|")
        for label, m in (("uniform codes", s), (f"prior, T = {q['temperature']:g}", q),
                         ("test images vs train images", s["real_vs_real"])):
            print(f"| {label} | {m['fid']:.2f} | {m['kid_mean']:.4f} ± {m['kid_std']:.4f} | {m['precision']:.3f} | "
                  f"{m['recall']:.3f} | {m['classifier']['score']:.2f} |")

    # how often the cap binds, on the test codes
    import numpy as np
    import torch

    from vqdraw.codestats import encode_images
    from vqdraw.data import load_dataset
    from vqdraw.fixedpoint import MAX_FREQUENCY
    from vqdraw.model import VQDraw
    from vqdraw.prior import load_prior

    model = VQDraw.load(model_dir).eval()
    prior = load_prior(model_dir, model)
    with torch.no_grad():
        codes = encode_images(model, load_dataset(dataset, "test")).numpy()
    freq = prior.exact.frequencies(codes)
    top = freq.max(axis=2)
    print(f"\ncap: {np.mean(top == MAX_FREQUENCY):.4%} of the test codes' distributions hit 3/4; "
          f"largest probability of any code: mean {np.mean(top) / 2**24:.3f}, max {np.max(top) / 2**24:.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
