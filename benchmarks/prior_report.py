"""Tables for docs/prior.md: a model's learned prior on the 500 test digits of mnist-embedded.

Real files, by code prefix: the test digits' greedy codes (the first n of each) written as one
fixed-length .vqd file and as one entropy-coded file, the latter decoded back (it must give the same
codes), beside the prior's cross-entropy of those codes; the prior's cross-entropy per stage; how
often the 3/4 cap on a code's probability binds; and, when their outputs are given, the tables of
`vqdraw eval-nll --prior` and `vqdraw eval-samples --prior`.

    python benchmarks/prior_report.py MODEL_DIR [NLL_DIR] [SAMPLES_DIR ...]
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from vqdraw.compress.bitstream import read_header
from vqdraw.compress.codec import compress_codes, read_file
from vqdraw.evaluate.codestats import encode_images
from vqdraw.data import balanced_subset, load_dataset
from vqdraw.compress.fixedpoint import MAX_FREQUENCY
from vqdraw.core.model import VQDraw
from vqdraw.prior import load_prior


def files_by_prefix(model, prior, codes: np.ndarray) -> None:
    K, N = model.options, model.stages
    count = codes.shape[0]
    print(f"\n{count} test digits, one file of all of them each way:\n")
    print("| stages n | n·log2 K | fixed-length file (bits/digit) | entropy-coded file (bits/digit) | its payload "
          "| prior cross-entropy | payload − cross-entropy (bits per file) | smaller than n·log2 K |")
    print("|---|---|---|---|---|---|---|---|")
    for n in range(1, N + 1):
        part = codes[:, :n]
        fixed = compress_codes(model, part)
        coded = compress_codes(model, part, prior=prior)
        back = read_file(model, coded, prior)
        assert np.array_equal(back.codes, part), "entropy-coded codes did not come back"
        payload = 8 * read_header(coded).payload_bytes
        ce = float(-prior.log_prob(part).sum()) / math.log(2)
        uniform = n * math.log2(K)
        print(f"| {n} | {uniform:.0f} | {8 * len(fixed) / count:.2f} | {8 * len(coded) / count:.2f} | "
              f"{payload / count:.2f} | {ce / count:.2f} | {payload - ce:.1f} | "
              f"{100 * (1 - payload / count / uniform):.1f}% |")


def per_stage(prior, codes: np.ndarray) -> None:
    bits = (-prior.stage_log_probs(codes) / math.log(2)).mean(0).tolist()
    freq = prior.exact.frequencies(codes)
    top = freq.max(axis=2) / 2**24
    K = prior.options
    print("\n| stage | " + " | ".join(str(i + 1) for i in range(len(bits))) + " | all |")
    print("|---|" + "---|" * (len(bits) + 1))
    print("| prior cross-entropy (bits) | " + " | ".join(f"{b:.2f}" for b in bits) + f" | {sum(bits):.2f} |")
    print(f"| uniform, log2 K | " + " | ".join(f"{math.log2(K):.2f}" for _ in bits)
          + f" | {len(bits) * math.log2(K):.2f} |")
    print("| mean largest probability | " + " | ".join(f"{t:.3f}" for t in top.mean(0)) + f" | {top.mean():.3f} |")
    print(f"\nthe 3/4 cap binds for {np.mean(freq.max(axis=2) == MAX_FREQUENCY):.3%} of the codes' distributions")


def nll_table(nll_dir: str) -> None:
    nll = json.loads((Path(nll_dir) / "nll.json").read_text())
    print(f"\n{nll['rows'][0]['count']} test digits, beam {nll['rows'][0]['beam']}:\n")
    print("| stages n | single, uniform (bits/dim) | single, prior | marginal, uniform | marginal, prior "
          "| n ln K (nats) | −ln p(c*) (nats) |")
    print("|---|---|---|---|---|---|---|")
    for r in nll["rows"]:
        print(f"| {r['stages']} | {r['bits_per_dim_single']:.4f} | {r['bits_per_dim_single_prior']:.4f} | "
              f"{r['bits_per_dim_marginal']:.4f} | {r['bits_per_dim_marginal_prior']:.4f} | "
              f"{r['nats_code']:.2f} | {r['nats_code_prior']:.2f} |")


def samples_table(dirs: list[str]) -> None:
    rows = []
    for d in dirs:
        s = json.loads((Path(d) / "eval-samples.json").read_text())
        if not rows:
            rows.append(("uniform codes", s))
            rows.append(("test digits (against the train digits)", s["real_vs_real"]))
            print(f"\n{s['count']} samples each, feature net test accuracy {s['feature_net_test_accuracy']:.4f}\n")
        q = s["prior_samples"]
        rows.append((f"prior, temperature {q['temperature']:g}", q))
    print("| samples | FID | KID | precision | recall | classifier score |")
    print("|---|---|---|---|---|---|")
    for label, m in rows:
        print(f"| {label} | {m['fid']:.2f} | {m['kid_mean']:.4f} ± {m['kid_std']:.4f} | {m['precision']:.3f} | "
              f"{m['recall']:.3f} | {m['classifier']['score']:.2f} |")


def main(model_dir: str, nll_dir: str | None = None, *sample_dirs: str) -> None:
    torch.set_num_threads(1)
    model = VQDraw.load(model_dir).eval()
    prior = load_prior(model_dir, model)
    meta = json.loads((Path(model_dir) / "prior.json").read_text())["training"]
    print(f"model {model_dir}: K={model.options}, N={model.stages}; prior trained {meta['steps']} steps "
          f"(best held-out step {meta['best_step']}), {meta['train_items']} train codes, "
          f"{meta['heldout_items']} held out ({meta['heldout_bits']:.2f} bits per item held out)")
    test = load_dataset("mnist-embedded", "test")
    images = test.batch(balanced_subset(test.labels, 500, size=len(test)))
    with torch.no_grad():
        codes = torch.cat([model.encode(x) for x in images.split(250)]).numpy()
    per_stage(prior, codes)
    files_by_prefix(model, prior, codes)
    if nll_dir:
        nll_table(nll_dir)
    if sample_dirs:
        samples_table(list(sample_dirs))


if __name__ == "__main__":
    main(*sys.argv[1:])
