"""What each candidate representation of speech can give back at best, before any coding, as JSON.

    python benchmarks/audio_representation.py [--limit N] [--iters 64]

A VQ-DRAW model of speech reconstructs a representation, and a waveform is made from it; however
good the model, the waveform can be no better than the representation's own round trip. This
measures that ceiling on the held-out (test-split) files of Debian's English prompts
(`asterisk-en`, 8 kHz mono) for each candidate:

  * ``mulaw``: the 8-bit mu-law waveform the audio preset models (exact samples, 256 levels);
  * ``stft``: the STFT magnitude (256-sample Hann window, hop 64), phase rebuilt by fast
    Griffin-Lim (Perraudin et al. 2013, momentum 0.99) from random phase;
  * ``mel-B``: B mel bands of that magnitude (HTK mel scale, triangular filters), the magnitude
    rebuilt by non-negative least squares through the filterbank's pseudo-inverse, then Griffin-Lim;
  * ``logmel-B-q8``: the same log-mel, each value rounded to one of 256 levels over a fixed 80 dB
    range first (how finely a model's output would have to land).

STOI (pystoi, 8 kHz) is the mean over files, SNR over all samples (without alignment: none of these
delay the signal). Griffin-Lim is seeded, so the figures repeat.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np
import torch

RATE = 8000


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--limit", type=int, default=0, help="use only the first N held-out files (0: all)")
    p.add_argument("--iters", type=int, default=64, help="Griffin-Lim iterations")
    p.add_argument("--bands", type=int, nargs="*", default=[40, 64, 80])
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from pystoi import stoi

    from vqdraw.data import audio as adata
    from vqdraw.data.spectral import HOP, N_FFT, griffin_lim, log_mel, magnitude, waveform_from_log_mel

    root = adata.asterisk_dir()
    if root is None:
        sys.exit(adata.asterisk_missing())
    files = adata.split_files(adata.audio_files(root), root, "test")
    if args.limit:
        files = files[: args.limit]
    originals = []
    for f in files:
        x, rate = adata.read_audio(f, mix=True)
        originals.append(adata.resample(x, rate, RATE).astype(np.float64))

    def mulaw(x):
        return adata.mu_law_decode(adata.mu_law_encode(x)).astype(np.float64)

    candidates = {"mulaw": mulaw}

    def via_stft(x):
        return griffin_lim(magnitude(x), len(x), args.iters)

    candidates["stft"] = via_stft
    for bands in args.bands:
        def via_mel(x, bands=bands, quantise=False):
            mel = log_mel(x, bands, RATE)
            if quantise:  # 256 levels over the 80 dB (9.21 in natural log) below the file's loudest value
                span = 80 / 20 * math.log(10)
                top = mel.max()
                mel = torch.round((mel.clamp(top - span, top) - (top - span)) / span * 255) / 255 * span + top - span
            return waveform_from_log_mel(mel, len(x), RATE, args.iters)

        candidates[f"mel-{bands}"] = via_mel
        candidates[f"logmel-{bands}-q8"] = lambda x, bands=bands: via_mel(x, bands, quantise=True)

    report = {"benchmark": "audio_representation", "files": len(files),
              "seconds_of_audio": round(sum(len(x) for x in originals) / RATE, 1), "rate": RATE,
              "n_fft": N_FFT, "hop": HOP, "griffin_lim_iters": args.iters, "candidates": {}}
    for name, fn in candidates.items():
        t0 = time.perf_counter()
        outs = [fn(x) for x in originals]
        signal = sum(float(np.sum(x * x)) for x in originals)
        noise = sum(float(np.sum((x - y) ** 2)) for x, y in zip(originals, outs))
        scores = [stoi(x, y, RATE, extended=False) for x, y in zip(originals, outs)]
        report["candidates"][name] = {"stoi": round(float(np.mean(scores)), 4),
                                      "snr_db": round(10 * math.log10(signal / max(noise, 1e-30)), 2),
                                      "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
