"""Speech as a log-mel spectrogram and back (vqdraw.data.spectral): shapes, the filterbank's
partition of the spectrum, a seeded round trip whose spectrogram matches the original's."""

from __future__ import annotations

import numpy as np
import torch

from vqdraw.data.spectral import HOP, griffin_lim, log_mel, magnitude, mel_filterbank, waveform_from_log_mel


def _speechlike(seconds: float = 0.5, rate: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    pitch = 120 + 30 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
    return 0.2 * x / np.abs(x).max()


def test_filterbank_and_shapes():
    fb = mel_filterbank(40)
    assert fb.shape == (40, 129) and fb.min() >= 0 and fb.max() <= 1 + 1e-9
    assert (fb.sum(0)[1:-1] > 0).all()  # every bin between 0 Hz and Nyquist feeds a band
    x = _speechlike()
    mel = log_mel(x, 40)
    assert mel.shape == (40, len(x) // HOP + 1) and torch.isfinite(mel).all()


def test_round_trip_keeps_the_spectrogram_and_repeats():
    x = _speechlike()
    y = waveform_from_log_mel(log_mel(x, 64), len(x))
    assert y.shape == x.shape
    assert np.array_equal(y, waveform_from_log_mel(log_mel(x, 64), len(x)))  # seeded
    a, b = magnitude(x), magnitude(y)
    assert float((a - b).norm() / a.norm()) < 0.15  # the spectra agree (0.087 measured; noise: 1.1)
    exact = griffin_lim(magnitude(x), len(x), iters=64)
    assert float((magnitude(exact) - a).norm() / a.norm()) < 0.08  # 0.042 measured
