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

N_FFT, HOP, RATE = 256, 64, 8000


def mel_filterbank(bands: int, n_fft: int = N_FFT, rate: int = RATE) -> torch.Tensor:
    """(bands, n_fft // 2 + 1) triangular filters, equally spaced on the HTK mel scale."""
    def mel(f):
        return 2595 * np.log10(1 + f / 700)

    def hz(m):
        return 700 * (10 ** (m / 2595) - 1)

    freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
    edges = hz(np.linspace(mel(0), mel(rate / 2), bands + 2))
    fb = np.zeros((bands, len(freqs)))
    for b in range(bands):
        lo, mid, hi = edges[b], edges[b + 1], edges[b + 2]
        fb[b] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)
    return torch.tensor(fb, dtype=torch.float64)


def stft(x: torch.Tensor) -> torch.Tensor:
    return torch.stft(x, N_FFT, HOP, window=torch.hann_window(N_FFT, dtype=x.dtype), return_complex=True)


def istft(spec: torch.Tensor, length: int) -> torch.Tensor:
    return torch.istft(spec, N_FFT, HOP, window=torch.hann_window(N_FFT, dtype=torch.float64), length=length)


def griffin_lim(mag: torch.Tensor, length: int, iters: int, seed: int = 0) -> torch.Tensor:
    """Fast Griffin-Lim: a waveform whose STFT magnitude approaches ``mag``."""
    g = torch.Generator().manual_seed(seed)
    angles = torch.exp(2j * math.pi * torch.rand(mag.shape, generator=g, dtype=torch.float64))
    previous = torch.zeros_like(angles)
    for _ in range(iters):
        rebuilt = stft(istft(mag * angles, length))
        accelerated = rebuilt - 0.99 / (1 + 0.99) * previous
        previous = rebuilt
        angles = accelerated / accelerated.abs().clamp_min(1e-12)
    return istft(mag * angles, length)


def from_mel(mel_mag: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
    """The least-squares magnitude through the filterbank's pseudo-inverse, clamped at 0."""
    return (torch.linalg.pinv(fb) @ mel_mag).clamp_min(0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--limit", type=int, default=0, help="use only the first N held-out files (0: all)")
    p.add_argument("--iters", type=int, default=64, help="Griffin-Lim iterations")
    p.add_argument("--bands", type=int, nargs="*", default=[40, 64, 80])
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from pystoi import stoi

    from vqdraw.data import audio as adata

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
        t = torch.from_numpy(x)
        return griffin_lim(stft(t).abs(), len(x), args.iters).numpy()

    candidates["stft"] = via_stft
    for bands in args.bands:
        fb = mel_filterbank(bands)

        def via_mel(x, fb=fb, quantise=False):
            t = torch.from_numpy(x)
            mel = fb @ stft(t).abs()
            if quantise:  # log-mel on 256 levels over 80 dB below the file's loudest band
                db = 20 * torch.log10(mel.clamp_min(1e-10))
                top = db.max()
                q = torch.round((db.clamp(top - 80, top) - (top - 80)) / 80 * 255)
                mel = 10 ** (((q / 255) * 80 + top - 80) / 20)
            return griffin_lim(from_mel(mel, fb), len(x), args.iters).numpy()

        candidates[f"mel-{bands}"] = via_mel
        candidates[f"logmel-{bands}-q8"] = lambda x, fb=fb: via_mel(x, fb, quantise=True)

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
