"""Audio (1, L) mono clips of 8-bit mu-law levels: WAV/FLAC files and audio datasets in, WAV files
and waveform/spectrogram pictures out.

    vqd = compress_audio(model, samples, rate)       one .vqd for a whole waveform of any length
    samples, rate = decompress_audio(model, vqd)     the decoded waveform, cut to the recorded length
    snr_db(original, decoded)                         10 log10(signal power / error power)

A waveform is cut into clips of the model's length L (the last one padded), each clip encoded on
its own; the ``.vqd`` header records the length in samples and the sample rate (docs/vqd-format.md),
so decoding gives back a waveform of exactly the original length and rate. Data representation and
dataset splits: :mod:`vqdraw.data.audio`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .base import Modality, plural


class AudioModality(Modality):
    name = "audio"
    noun = "clip"
    give = "WAV/FLAC files (or audio:PATH, asterisk-en)"
    decodes_at_rate = True
    pair_suffix = ""  # a folder: NNN-original.wav, NNN-reconstructed.wav, pairs.png
    run_outputs = ("samples", "reconstructions", "samples.png", "reconstructions.png", "stages.png")
    element = "sample"
    headline = ("test_snr_db", "snr", ".2f")

    @property
    def file_suffixes(self):
        from ..data.audio import AUDIO_SUFFIXES

        return AUDIO_SUFFIXES

    def sample_name(self, seed: int) -> str:
        return f"samples-{seed}"

    # -------------------------------------------------------------- inputs
    def load_files(self, model, files, *, count=None, fit=False):
        """The files' clips (B, 1, L) at the model's rate (the last clip of each file padded)."""
        import torch

        from ..data.audio import to_clips

        clips = np.concatenate([to_clips(read_for_model(model, f), model.config.data_shape[-1], pad=True)
                                for f in files])
        if count:
            clips = clips[:count]
        return torch.from_numpy(clips).permute(0, 2, 1).float().div_(255).to(model.device)

    # -------------------------------------------------------------- outputs
    def write_pairs(self, model, data, recon, out, *, stages, title=""):
        from ..data.audio import data_to_samples, write_wav

        rate = model.config.sample_rate
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        orig, rec = data_to_samples(data), data_to_samples(recon)
        for i, (o, r) in enumerate(zip(orig, rec)):
            write_wav(out / f"{i:03d}-original.wav", o, rate)
            write_wav(out / f"{i:03d}-reconstructed.wav", r, rate)
        save_waveform_pairs(orig, rec, rate, out / "pairs.png", title=title)
        return (f"{out}/: {plural(len(orig), 'clip')} of {orig.shape[1] / rate:.3f} s as original/reconstructed "
                f"WAV pairs, {stages} stages = {bits_per_second(model, stages):.0f} bits/s, "
                f"SNR {snr_db(orig, rec):.2f} dB")

    def write_samples(self, model, out, *, count, stages, seed, codes=None, progress=True):
        """``out/000.wav``, ``out/001.wav``, …, made and written :data:`SAMPLE_CHUNK` at a time;
        they replace files of the same names in ``out`` all at once at the end."""
        from ..data.audio import data_to_samples, write_wav
        from .base import SAMPLE_CHUNK, items_of, progress_bar, sample_chunks, write_files_atomically

        total = count if codes is None else int(codes.shape[0])
        chunks = (data_to_samples(decoded) for decoded in
                  sample_chunks(model, count, stages=stages, seed=seed, codes=codes))
        names = _WavNames(total)
        bar = progress_bar(total, chunk=SAMPLE_CHUNK, desc="sample", unit=self.noun, enabled=progress)
        rate = model.config.sample_rate
        write_files_atomically(items_of(chunks), names, Path(out), lambda s, path: write_wav(path, s, rate),
                               progress=bar)
        return f"{out}/: {plural(total, 'sample')} as WAV"

    def write_stages(self, model, data, out, *, max_stages, title=""):
        save_audio_stages(model, data, out, max_stages=max_stages, title=title)
        return str(out)

    def encode(self, model, files, out, options):
        from ..errors import InputError
        from .base import progress_bar, write_vqd_file

        stages, batch = options.stages, options.batch
        if options.prior is not None:
            raise InputError("audio is written at fixed length only; encode it without --prior")

        if len(files) != 1:
            raise InputError(f"give one audio file to encode (got {len(files)}); each .vqd file holds one waveform")
        samples = read_for_model(model, files[0])
        clips = -(-len(samples) // model.config.data_shape[-1])
        bar = progress_bar(clips, chunk=batch, desc="encode", unit=self.noun, enabled=options.progress)
        try:
            data = compress_audio(model, samples, stages=stages, policy=options.policy, batch=batch,
                                  progress=bar.update)
        finally:
            bar.close()
        write_vqd_file(out, data)
        seconds = len(samples) / model.config.sample_rate
        return (f"{out}: {seconds:.2f} s of audio ({len(samples)} samples at {model.config.sample_rate} Hz) in "
                f"{plural(-(-len(samples) // model.config.data_shape[-1]), 'clip')}, {stages or model.stages} stages "
                f"of K={model.options}, {len(data)} bytes = {8 * len(data) / max(clips, 1):.1f} bits per clip, "
                f"{8 * len(data) / max(len(samples), 1):.3f} bits per sample, {8 * len(data) / seconds:.0f} bits/s")

    def decode(self, model, data, out, options, *, source):
        """OUT is a .wav file, or a folder that gets decoded.wav; decoded and written ``options.batch``
        clips at a time (the file appears at the end, in one rename; audio has no prior)."""
        from ..data.audio import _soundfile
        from ..io import atomic_writer
        from .base import progress_bar

        stages, batch, progress = options.stages, options.batch, options.progress
        vqd, pieces = decompress_audio_pieces(model, data, stages=stages, batch=batch)
        rate = int(vqd.sample_rate)
        target = out if out.suffix.lower() == ".wav" else out / "decoded.wav"
        target.parent.mkdir(parents=True, exist_ok=True)
        if options.rate and options.rate != rate:  # resampled as a whole (the polyphase filter spans pieces)
            from ..data.audio import resample, write_wav

            samples = resample(np.concatenate(list(pieces) or [np.zeros(0, np.float32)]), rate, options.rate)
            write_wav(target, samples, options.rate)
            return (f"{target}: {len(samples) / options.rate:.2f} s ({len(samples)} samples at {options.rate} Hz, "
                    f"resampled from {rate} Hz) decoded from {source}")
        sf = _soundfile()
        bar = progress_bar(vqd.count, chunk=batch, desc="decode", unit=self.noun, enabled=progress)
        done = 0
        try:
            with atomic_writer(target) as f, sf.SoundFile(f, mode="w", samplerate=rate, channels=1,
                                                           subtype="PCM_16", format="WAV") as wav:
                for piece in pieces:  # the same bytes as write_wav of the whole waveform
                    wav.write(np.clip(piece, -1, 1))
                    step = min(batch, vqd.count - done)
                    done += step
                    bar.update(step)
        finally:
            bar.close()
        samples = vqd.length
        return f"{target}: {samples / rate:.2f} s ({samples} samples at {rate} Hz) decoded from {source}"

    # -------------------------------------------------------------- training
    def write_run_outputs(self, model, run_dir, test_data, title=""):
        import shutil

        import torch

        run_dir = Path(run_dir)
        for name in ("samples", "reconstructions"):
            shutil.rmtree(run_dir / name, ignore_errors=True)  # a checkpoint's outputs replace the last
        self.write_samples(model, run_dir / "samples", count=8, stages=None, seed=0)
        pick = torch.linspace(0, len(test_data) - 1, min(8, len(test_data))).long()
        x = test_data[pick]
        self.write_pairs(model, x, model.reconstruct(x), run_dir / "reconstructions", stages=model.stages,
                         title=title)
        shutil.copyfile(run_dir / "reconstructions" / "pairs.png", run_dir / "reconstructions.png")
        save_audio_stages(model, x, run_dir / "stages.png", title=title)

    def test_metrics(self, model, data, recon):
        """Signal-to-noise ratio of the decoded waveforms (dB, over all test samples)."""
        from ..data.audio import data_to_samples

        return {"test_snr_db": snr_db(data_to_samples(data), data_to_samples(recon))}

    def summary(self, metrics, config=None):
        out = super().summary(metrics, config)
        return out + (f", SNR {metrics['test_snr_db']:.2f} dB" if "test_snr_db" in metrics else "")


class _WavNames:
    """000.wav, 001.wav, … (three digits at least), computed on demand."""

    def __init__(self, count: int):
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> str:
        if not 0 <= i < self.count:
            raise IndexError(i)
        return f"{i:03d}.wav"


# ------------------------------------------------------------------ the library
def read_for_model(model, path) -> np.ndarray:
    """A WAV/FLAC file's samples at the model's rate, mono: another rate is resampled and several
    channels are mixed down, each said in one :class:`vqdraw.errors.InputWarning` (the command
    shows it as a ``warning:`` line)."""
    import warnings

    from ..data.audio import _soundfile, read_audio, resample
    from ..errors import InputWarning

    samples, rate = read_audio(path, mix=True)
    channels = int(_soundfile().info(str(path)).channels)
    want = model.config.sample_rate
    done = []
    if channels != 1:
        done.append(f"mixed {channels} channels down to mono")
    if rate != want:
        samples = resample(samples, rate, want)
        done.append(f"resampled {rate} Hz to {want} Hz (the model's rate)")
    if done:
        warnings.warn(f"{path}: " + " and ".join(done), InputWarning, stacklevel=2)
    return samples


def bits_per_second(model, stages: int | None = None) -> float:
    """The payload's bits per second of audio: ceil(n log2 K) bits per clip of L samples."""
    from ..compress.bitstream import bits_per_image

    return bits_per_image(model.options, stages or model.stages) * model.config.sample_rate / model.config.data_shape[-1]


def compress_audio(model, samples: np.ndarray, *, stages: int | None = None, beam: int | None = None, batch: int = 64,
                   progress=None, policy=None) -> bytes:
    """One ``.vqd`` file for a waveform (float samples in [-1, 1] at the model's rate): its clips'
    codes, its length in samples and the sample rate. The clips are held as mu-law bytes and
    turned into the model's data ``batch`` at a time; ``progress(k)`` (optional) is called after
    each batch of ``k`` clips. ``policy``: a :class:`~vqdraw.core.stageloop.Policy` (greedy by
    default; ``beam=W`` is the deprecated spelling of ``policy=Beam(W)``)."""
    import torch

    from ..compress.bitstream import write_vqd
    from ..compress.codec import encode_images
    from ..core.inputs import check_batch, check_policy, check_stages
    from ..data.audio import to_clips

    stages, batch = check_stages(model.config, stages, low=1), check_batch(batch)
    policy = check_policy(policy, beam, "compress_audio")

    length = model.config.data_shape[-1]
    clips = torch.from_numpy(to_clips(np.asarray(samples), length, pad=True)).permute(0, 2, 1)  # uint8
    codes = []
    for i in range(0, len(clips), batch):
        part = clips[i: i + batch].float().div_(255).to(model.device)
        codes.append(encode_images(model, part, stages, policy=policy))
        if progress is not None:
            progress(len(part))
    codes = torch.cat(codes) if codes else torch.zeros((0, stages or model.stages), dtype=torch.int64)
    return write_vqd(codes.numpy(), int(model.options), tuple(model.config.data_shape), model.fingerprint(),
                     modality="audio", length=len(samples), sample_rate=int(model.config.sample_rate))


def decompress_audio(model, data: bytes, *, stages: int | None = None, batch: int = 256) -> tuple[np.ndarray, int]:
    """The waveform of a ``.vqd`` file made by :func:`compress_audio`: its clips decoded and
    concatenated, cut to the recorded length; and the recorded sample rate."""
    vqd, pieces = decompress_audio_pieces(model, data, stages=stages, batch=batch)
    parts = list(pieces)
    samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return samples, int(vqd.sample_rate)


def decompress_audio_pieces(model, data: bytes, *, stages: int | None = None, batch: int = 256):
    """:func:`decompress_audio` a piece at a time: ``(VqdFile, pieces)``, where ``pieces`` yields
    the float32 samples of ``batch`` clips at a time, the last piece cut to the recorded length.
    The file and ``stages`` are checked before this returns; each piece is decoded when asked for."""
    import torch

    from ..compress.codec import check_file_stages, read_file
    from ..core.inputs import check_batch
    from ..data.audio import data_to_samples
    from ..errors import InputError

    vqd = read_file(model, data)
    if vqd.sample_rate != model.config.sample_rate:
        raise InputError(f"the file records {vqd.sample_rate} Hz audio, the model makes {model.config.sample_rate} Hz")
    batch = check_batch(batch)
    codes = torch.from_numpy(vqd.codes[:, :check_file_stages(vqd, stages, "clip")])

    def pieces():
        left = int(vqd.length or 0)
        for i in range(0, vqd.count, batch):
            if left <= 0:
                return
            piece = data_to_samples(model.decode(codes[i: i + batch])).reshape(-1)[:left]
            left -= len(piece)
            yield piece

    return vqd, pieces()


def snr_db(original, decoded) -> float:
    """10 log10(sum x^2 / sum (x - y)^2) over all samples (dB)."""
    x = np.asarray(original, dtype=np.float64).reshape(-1)
    y = np.asarray(decoded, dtype=np.float64).reshape(-1)
    noise = float(np.sum((x - y) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(max(float(np.sum(x * x)), 1e-30) / noise)


def spectrogram(x, frame: int = 256, hop: int = 64) -> np.ndarray:
    """Log-magnitude STFT (frequency, time) with a Hann window, in dB."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if len(x) < frame:
        x = np.pad(x, (0, frame - len(x)))
    n = 1 + (len(x) - frame) // hop
    frames = np.stack([x[i * hop: i * hop + frame] for i in range(n)]) * np.hanning(frame)
    return 20 * np.log10(np.abs(np.fft.rfft(frames, axis=1)).T + 1e-6)


def save_waveform_pairs(orig: np.ndarray, rec: np.ndarray, rate: int, path, title: str = ""):
    """Each original (grey) under its reconstruction (blue), with the per-clip SNR."""
    from ..evaluate.plots import figure, save_figure

    n = min(len(orig), 8)
    fig = figure(9, 0.9 * n + 0.7)
    for i in range(n):
        ax = fig.add_subplot(n, 1, i + 1)
        t = np.arange(orig.shape[1]) / rate
        ax.plot(t, orig[i], color="#999999", linewidth=1.0)
        ax.plot(t, rec[i], color="#1f5fbf", linewidth=0.6)
        ax.set_xlim(0, t[-1])
        ax.set_ylabel(f"{snr_db(orig[i], rec[i]):.1f} dB", fontsize=6, rotation=0, ha="right", va="center")
        ax.tick_params(labelsize=5)
    fig.suptitle((title + "\n" if title else "") + "original (grey), reconstruction (blue); SNR at left", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def save_audio_stages(model, data, path, max_stages: int | None = None, title: str = ""):
    """The first clip decoded from its first s codes, s = 1, 2, 5, 10, ..., N: waveform and
    spectrogram per stage under the original's, with the bits per second so far."""
    from ..data.audio import data_to_samples
    from ..evaluate.plots import figure, save_figure
    from ..compress.text import default_stage_points

    rate = model.config.sample_rate
    limit = model.stages if max_stages is None else min(max_stages, model.stages)
    points = [s for s in default_stage_points(model.stages) if s <= limit] or [1]
    x = data[:1]
    codes = model.encode(x, stages=max(points))
    orig = data_to_samples(x)[0]
    rows = [("original", orig)]
    rows += [(f"{s} stage{'s' if s != 1 else ''}\n{bits_per_second(model, s):.0f} bit/s\n"
              f"SNR {snr_db(orig, y := data_to_samples(model.decode(codes, stages=s))[0]):.1f} dB", y)
             for s in points]
    fig = figure(10, 1.0 * len(rows) + 0.7)
    t = np.arange(len(orig)) / rate
    for i, (label, y) in enumerate(rows):
        ax = fig.add_subplot(len(rows), 2, 2 * i + 1)
        ax.plot(t, y, color="#999999" if i == 0 else "#1f5fbf", linewidth=0.6)
        ax.set_xlim(0, t[-1])
        ax.set_ylim(-1, 1)
        ax.set_ylabel(label, fontsize=6, rotation=0, ha="right", va="center")
        ax.tick_params(labelsize=5)
        ax = fig.add_subplot(len(rows), 2, 2 * i + 2)
        ax.imshow(spectrogram(y), origin="lower", aspect="auto", cmap="magma", vmin=-60, vmax=30,
                  extent=(0, t[-1], 0, rate / 2000))
        ax.tick_params(labelsize=5)
        ax.set_ylabel("kHz", fontsize=5)
    fig.suptitle((title + "\n" if title else "") + "decoded from the first s codes: waveform, spectrogram",
                 fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
