"""Speech as log-mel spectrogram blocks (1, bands, frames): WAV/FLAC files in, WAV files and
spectrogram pictures out, the waveform rebuilt from the decoded spectrogram by Griffin-Lim.

    vqd = compress_speech(model, samples)             one .vqd for a whole waveform of any length
    samples, rate = decompress_speech(model, vqd)     the decoded waveform, of the recorded length

A waveform at the model's rate is turned into its 40-band log-mel spectrogram (125 frames a second
at 8 kHz, :mod:`vqdraw.data.spectral`), cut into blocks of the model's frame count (the last one
padded with silence) and each block coded on its own, as an image. The ``.vqd`` header records the
waveform's length in samples and its rate (docs/vqd-format.md), so decoding gives back exactly that
many samples: the blocks' spectrogram side by side, cut to the waveform's frames, through
Griffin-Lim (seeded: a file always decodes to the same samples).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .audio import AudioModality, read_for_model
from .base import plural


def _bands_frames(model) -> tuple[int, int]:
    _, bands, frames = model.config.data_shape
    return int(bands), int(frames)


class SpeechModality(AudioModality):
    name = "speech"
    noun = "block"
    reads = "audio"  # WAV/FLAC files, as audio models do (give: the same)
    run_outputs = ("samples", "reconstructions", "samples.png", "reconstructions.png", "stages.png")
    element = "level"
    headline = ("test_lsd_db", "lsd", ".2f")

    # -------------------------------------------------------------- inputs
    def load_files(self, model, files, *, count=None, fit=False):
        """The files' blocks (B, 1, bands, frames) (the last block of each file padded)."""
        import torch

        from ..data.spectral import mel_blocks

        bands, frames = _bands_frames(model)
        rate = model.config.sample_rate
        blocks = np.concatenate([mel_blocks(read_for_model(model, f), bands, frames, rate, pad=True) for f in files])
        if count:
            blocks = blocks[:count]
        return torch.from_numpy(blocks).permute(0, 3, 1, 2).float().div_(255).to(model.device)

    # -------------------------------------------------------------- outputs
    def write_pairs(self, model, data, recon, out, *, stages, title=""):
        """OUT/original.wav and OUT/reconstructed.wav (the blocks in a row, through Griffin-Lim) and
        OUT/pairs.png (their spectrograms)."""
        from ..data.audio import write_wav
        from ..data.spectral import log_spectral_distance, waveform_of_blocks

        rate = model.config.sample_rate
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_wav(out / "original.wav", waveform_of_blocks(data, rate=rate), rate)
        write_wav(out / "reconstructed.wav", waveform_of_blocks(recon, rate=rate), rate)
        save_spectrogram_rows([("original", data), (f"{stages} stages", recon)], out / "pairs.png", title=title)
        seconds = len(data) * _seconds_per_block(model)
        return (f"{out}/: {plural(len(data), 'block')} ({seconds:.2f} s) as original/reconstructed WAV (both "
                f"through Griffin-Lim) and pairs.png, {stages} stages = {bits_per_second(model, stages):.0f} bits/s, "
                f"log-spectral distance {log_spectral_distance(data, recon):.2f} dB")

    def write_samples(self, model, out, *, count, stages, seed, codes=None, progress=True):
        """``out/000.wav``, … (one block each, through Griffin-Lim) and ``out/samples.png``."""
        import torch

        from ..data.audio import write_wav
        from ..data.spectral import waveform_of_blocks
        from .audio import _WavNames
        from .base import SAMPLE_CHUNK, progress_bar, sample_chunks, write_files_atomically

        total = count if codes is None else int(codes.shape[0])
        rate = model.config.sample_rate
        shown = []

        def blocks():
            for decoded in sample_chunks(model, count, stages=stages, seed=seed, codes=codes):
                if len(shown) < 16:
                    shown.append(decoded[: 16 - len(shown)].cpu())
                yield from decoded

        bar = progress_bar(total, chunk=SAMPLE_CHUNK, desc="sample", unit=self.noun, enabled=progress)
        write_files_atomically(blocks(), _WavNames(total), Path(out),
                               lambda b, path: write_wav(path, waveform_of_blocks(b[None], rate=rate), rate),
                               progress=bar)
        if shown:
            save_spectrogram_grid(torch.cat(shown), Path(out) / "samples.png")
        return f"{out}/: {plural(total, 'sample')} of {_seconds_per_block(model):.3f} s as WAV, samples.png"

    def write_stages(self, model, data, out, *, max_stages, title=""):
        save_speech_stages(model, data, out, max_stages=max_stages, title=title)
        return str(out)

    def encode(self, model, files, out, options):
        from ..errors import InputError
        from .base import progress_bar, write_vqd_file

        if options.prior is not None:
            raise InputError("speech is written at fixed length only; encode it without --prior")
        if len(files) != 1:
            raise InputError(f"give one audio file to encode (got {len(files)}); each .vqd file holds one waveform")
        samples = read_for_model(model, files[0])
        rate = model.config.sample_rate
        blocks = speech_blocks(model, samples)
        bar = progress_bar(len(blocks), chunk=options.batch, desc="encode", unit=self.noun, enabled=options.progress)
        try:
            data = compress_speech(model, samples, stages=options.stages, policy=options.policy,
                                   batch=options.batch, progress=bar.update, blocks=blocks)
        finally:
            bar.close()
        write_vqd_file(out, data)
        seconds = len(samples) / rate
        return (f"{out}: {seconds:.2f} s of audio ({len(samples)} samples at {rate} Hz) in "
                f"{plural(len(blocks), 'block')} of {_seconds_per_block(model) * 1000:.0f} ms, "
                f"{options.stages or model.stages} stages of K={model.options}, {len(data)} bytes = "
                f"{8 * len(data) / seconds:.0f} bits/s of audio")

    def decode(self, model, data, out, options, *, source):
        """OUT is a .wav file, or a folder that gets decoded.wav, at the model's rate or ``options.rate``."""
        from ..data.audio import _soundfile, resample, write_wav
        from ..io import atomic_writer

        vqd, pieces = decompress_speech_pieces(model, data, stages=options.stages, batch=options.batch)
        rate = int(vqd.sample_rate)
        want = options.rate or rate
        target = out if out.suffix.lower() == ".wav" else out / "decoded.wav"
        target.parent.mkdir(parents=True, exist_ok=True)
        if want != rate:  # resampled as a whole (the polyphase filter spans pieces)
            samples = resample(np.concatenate(list(pieces)), rate, want)
            write_wav(target, samples, want)
            return (f"{target}: {len(samples) / want:.2f} s ({len(samples)} samples at {want} Hz, resampled "
                    f"from {rate} Hz) decoded from {source}")
        sf = _soundfile()
        with atomic_writer(target) as f, sf.SoundFile(f, mode="w", samplerate=rate, channels=1, subtype="PCM_16",
                                                       format="WAV") as wav:
            for piece in pieces:  # the same bytes as write_wav of the whole waveform
                wav.write(np.clip(piece, -1, 1))
        return f"{target}: {vqd.length / rate:.2f} s ({vqd.length} samples at {rate} Hz) decoded from {source}"

    # -------------------------------------------------------------- training
    def write_run_outputs(self, model, run_dir, test_data, title=""):
        import shutil

        run_dir = Path(run_dir)
        for name in ("samples", "reconstructions"):
            shutil.rmtree(run_dir / name, ignore_errors=True)  # a checkpoint's outputs replace the last
        self.write_samples(model, run_dir / "samples", count=8, stages=None, seed=0, progress=False)
        shutil.copyfile(run_dir / "samples" / "samples.png", run_dir / "samples.png")
        x = test_data[: min(16, len(test_data))]  # 2 s of consecutive test speech
        self.write_pairs(model, x, model.reconstruct(x), run_dir / "reconstructions", stages=model.stages,
                         title=title)
        shutil.copyfile(run_dir / "reconstructions" / "pairs.png", run_dir / "reconstructions.png")
        save_speech_stages(model, x, run_dir / "stages.png", title=title)

    def test_metrics(self, model, data, recon):
        """Log-spectral distance of the decoded spectrograms (dB, lower is better)."""
        from ..data.spectral import log_spectral_distance

        return {"test_lsd_db": log_spectral_distance(data, recon)}

    def progress_fields(self, record):
        if "test_lsd_db" in record:
            return {"lsd": f"{record['test_lsd_db']:.2f}dB"}
        return super().progress_fields(record)

    def summary(self, metrics, config=None):
        out = super(AudioModality, self).summary(metrics, config)
        return out + (f", log-spectral distance {metrics['test_lsd_db']:.2f} dB" if "test_lsd_db" in metrics else "")


# ------------------------------------------------------------------ the library
def _seconds_per_block(model) -> float:
    from ..data.spectral import HOP

    return _bands_frames(model)[1] * HOP / model.config.sample_rate


def bits_per_second(model, stages: int | None = None) -> float:
    """The payload's bits per second of audio: ceil(n log2 K) bits per block."""
    from ..compress.bitstream import bits_per_image

    return bits_per_image(model.options, stages or model.stages) / _seconds_per_block(model)


def speech_blocks(model, samples: np.ndarray) -> np.ndarray:
    """(N, bands, frames, 1) uint8 log-mel blocks of a waveform at the model's rate (the last padded)."""
    from ..data.spectral import mel_blocks

    bands, frames = _bands_frames(model)
    return mel_blocks(np.asarray(samples, dtype=np.float32), bands, frames, model.config.sample_rate, pad=True)


def compress_speech(model, samples: np.ndarray, *, stages: int | None = None, batch: int = 64, progress=None,
                    policy=None, blocks: np.ndarray | None = None) -> bytes:
    """One ``.vqd`` file for a waveform (float samples in [-1, 1] at the model's rate): its blocks'
    codes, its length in samples and the sample rate; ``progress(k)`` after each batch of k blocks."""
    import torch

    from ..compress.bitstream import write_vqd
    from ..compress.codec import encode_images
    from ..core.inputs import check_batch, check_stages

    stages, batch = check_stages(model.config, stages, low=1), check_batch(batch)
    blocks = torch.from_numpy(speech_blocks(model, samples) if blocks is None else blocks).permute(0, 3, 1, 2)
    codes = []
    for i in range(0, len(blocks), batch):
        part = blocks[i: i + batch].float().div_(255).to(model.device)
        codes.append(encode_images(model, part, stages, policy=policy))
        if progress is not None:
            progress(len(part))
    codes = torch.cat(codes)
    return write_vqd(codes.numpy(), int(model.options), tuple(model.config.data_shape), model.fingerprint(),
                     modality="speech", length=len(samples), sample_rate=int(model.config.sample_rate))


def decompress_speech(model, data: bytes, *, stages: int | None = None, batch: int = 256) -> tuple[np.ndarray, int]:
    """The waveform of a ``.vqd`` file made by :func:`compress_speech` (float32 samples of the
    recorded length) and the recorded sample rate."""
    vqd, pieces = decompress_speech_pieces(model, data, stages=stages, batch=batch)
    parts = list(pieces)
    return (np.concatenate(parts) if parts else np.zeros(0, np.float32)), int(vqd.sample_rate)


def decompress_speech_pieces(model, data: bytes, *, stages: int | None = None, batch: int = 256):
    """:func:`decompress_speech` a piece at a time: ``(VqdFile, pieces)``. The blocks are decoded
    ``batch`` at a time into one float32 log mel spectrogram (bands x 4 bytes a frame); ``pieces``
    then yields the waveform 16 s at a time as Griffin-Lim rebuilds it
    (:func:`vqdraw.data.spectral.waveform_pieces`). The file and ``stages`` are checked before this
    returns."""
    import torch

    from ..compress.codec import check_file_stages, read_file
    from ..core.inputs import check_batch
    from ..data.spectral import LOG_LOW, frames_of, log_mel_of_blocks, waveform_pieces
    from ..errors import InputError

    vqd = read_file(model, data)
    if vqd.sample_rate != model.config.sample_rate:
        raise InputError(f"the file records {vqd.sample_rate} Hz audio, the model makes {model.config.sample_rate} Hz")
    batch = check_batch(batch)
    codes = torch.from_numpy(vqd.codes[:, :check_file_stages(vqd, stages, "block")])
    bands, frames = _bands_frames(model)
    length = int(vqd.length)
    mel = torch.full((bands, frames_of(length)), LOG_LOW, dtype=torch.float32)
    for i in range(0, vqd.count, batch):
        part = log_mel_of_blocks(model.decode(codes[i: i + batch]).cpu(), dtype=torch.float32)
        lo = i * frames
        take = min(part.shape[1], mel.shape[1] - lo)
        if take > 0:
            mel[:, lo: lo + take] = part[:, :take]
    return vqd, waveform_pieces(mel, length, int(vqd.sample_rate))


# ------------------------------------------------------------------ pictures
def _spectrogram_image(blocks) -> np.ndarray:
    from ..data.spectral import log_mel_of_blocks

    return log_mel_of_blocks(blocks).numpy()


def save_spectrogram_rows(rows, path, title: str = ""):
    """One mel spectrogram per row (label, blocks (B, 1, bands, frames) side by side)."""
    from ..evaluate.plots import figure, save_figure

    fig = figure(9, 1.1 * len(rows) + 0.6)
    for i, (label, blocks) in enumerate(rows):
        ax = fig.add_subplot(len(rows), 1, i + 1)
        ax.imshow(_spectrogram_image(blocks), origin="lower", aspect="auto", cmap="magma")
        ax.set_ylabel(label, fontsize=6, rotation=0, ha="right", va="center")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle((title + "\n" if title else "") + "log-mel spectrograms (time left to right, low bands at the bottom)",
                 fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def save_spectrogram_grid(blocks, path):
    """Blocks (B, 1, bands, frames) as a grid of small spectrograms (samples)."""
    from ..evaluate.plots import figure, save_figure

    n = len(blocks)
    cols = min(8, n)
    rows = -(-n // cols)
    fig = figure(1.2 * cols, 1.6 * rows)
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(_spectrogram_image(blocks[i: i + 1]), origin="lower", aspect="auto", cmap="magma")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return save_figure(fig, path)


def save_speech_stages(model, data, path, max_stages: int | None = None, title: str = ""):
    """The blocks decoded from their first s codes, s = 1, 2, 5, 10, ..., N, under the original."""
    from ..compress.text import default_stage_points
    from ..data.spectral import log_spectral_distance

    limit = model.stages if max_stages is None else min(max_stages, model.stages)
    points = [s for s in default_stage_points(model.stages) if s <= limit] or [1]
    codes = model.encode(data, stages=max(points))
    rows = [("original", data)]
    for s in points:
        y = model.decode(codes, stages=s)
        rows.append((f"{s} stage{'s' if s != 1 else ''}\n{bits_per_second(model, s):.0f} bit/s\n"
                     f"LSD {log_spectral_distance(data, y):.1f} dB", y))
    return save_spectrogram_rows(rows, path, title=title)
