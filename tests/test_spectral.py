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


def test_long_spectrograms_are_made_and_inverted_in_segments_with_the_same_values():
    """mel_levels works a segment at a time yet equals the whole-waveform log mel; a spectrogram
    longer than one Griffin-Lim segment is rebuilt in overlapping segments, finite and of the
    asked length, and keeps the waveform's spectrogram about as well as one segment does."""
    from vqdraw.data import spectral

    rng = np.random.default_rng(0)
    x = (0.2 * np.sin(np.arange(spectral.SEGMENT * HOP + 3000) / 8000 * 2 * np.pi * 300)
         + 0.01 * rng.standard_normal(spectral.SEGMENT * HOP + 3000)).astype(np.float32)
    mel = log_mel(x)
    levels = np.rint(np.clip((mel.numpy() - spectral.LOG_LOW) / (spectral.LOG_HIGH - spectral.LOG_LOW), 0, 1) * 255)
    assert np.array_equal(spectral.mel_levels(x), levels.astype(np.uint8))
    assert spectral.mel_levels(x[:10]).shape == (40, 1)  # shorter than a window: one frame
    y = waveform_from_log_mel(mel, len(x), iters=8)
    assert y.shape == x.shape and np.isfinite(y).all()
    err = (log_mel(y) - mel).abs().mean()
    assert float(err) < 1.0, float(err)
