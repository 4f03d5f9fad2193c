"""Audio as data: WAV/FLAC files -> mono 8-bit mu-law clips (N, L, 1) uint8 for a rank-1 model.

    read_audio("a.wav")                      -> (float32 samples in [-1, 1], sample rate); mono only
    mu_law_encode(x) / mu_law_decode(k)      -> the 256 levels of G.711's mu-law (mu = 255)
    load_audio_path("speech/", "test", 8000, 2048)  -> Dataset of clips, resampled to 8000 Hz
    load_asterisk_en("train", rate, clip)    -> Debian's recorded English prompts (asterisk-en)

Representation: a sample x in [-1, 1] is companded by mu-law, sign(x) ln(1 + 255|x|) / ln 256, and
quantised to one of 256 levels k; the model sees k / 255 (the uint8 value through
:meth:`Dataset.batch`), as text models see characters, so the categorical likelihood (256 classes),
the discretised logistic (256 bins) and MSE all apply unchanged. Decoding maps k back to the centre
of its mu-law bin.

Split (deterministic, by file, so no speaker prompt is cut between train and test): a file whose
path relative to the folder has CRC-32 divisible by 10 is a test file; if that leaves either split
empty, the last file (in sorted order) is the test split. One file alone: its first 90% of clips
train, the last 10% test. Files are cut into consecutive clips of L samples; a file's last partial
clip is dropped in datasets (``vqdraw encode`` pads it and records the length instead).

Sample rates: datasets are resampled to the model's rate with :func:`scipy.signal.resample_poly`
(polyphase, Kaiser window); files given to ``vqdraw encode`` must already have it (one-line refusal).
Stereo files are refused (mono models). Reading needs ``soundfile`` (``pip install "vqdraw[audio]"``).
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np

from .base import DatasetError, Dataset

AUDIO_SUFFIXES = (".wav", ".flac")
MU = 255
LEVELS = 256
DEFAULT_RATE = 8000
DEFAULT_CLIP = 2048
ASTERISK_DIRS = ("/usr/share/asterisk/sounds/en_US_f_Allison", "/usr/share/asterisk/sounds/en")
"""Where Debian's asterisk-core-sounds-en-wav installs its prompts (the first that exists is used)."""
ASTERISK_PACKAGE = "asterisk-core-sounds-en-wav"
ASTERISK_LICENCE = "CC-BY-SA-3.0 (recorded by Allison Smith; Debian's /usr/share/doc/asterisk-core-sounds-en/copyright)"


def _soundfile():
    try:
        import soundfile
    except ImportError:  # pragma: no cover - the audio extra is missing
        raise DatasetError('reading audio needs the soundfile package: pip install "vqdraw[audio]"') from None
    return soundfile


def read_audio(path, *, channels: int = 1, mix: bool = False) -> tuple[np.ndarray, int]:
    """A WAV/FLAC file's samples as float32 in [-1, 1] and its sample rate. One DatasetError line for
    a file that is missing, unreadable, truncated, empty, has another number of channels
    (``mix=True``: any number, averaged to mono), or holds NaN or infinite (float) samples."""
    sf = _soundfile()
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: no such audio file")
    if p.stat().st_size == 0:
        raise DatasetError(f"{p}: empty file (0 bytes), not audio")
    _check_riff_size(p)
    try:
        with sf.SoundFile(str(p)) as f:
            rate, have, frames = f.samplerate, f.channels, f.frames
            if have != channels and not (mix and channels == 1):
                raise DatasetError(f"{p}: {have} channels ({'stereo' if have == 2 else 'multichannel'}); "
                                   f"the model takes mono audio; mix it down first, e.g. "
                                   f"sox {p.name} -c 1 mono.wav")
            if frames > MAX_SAMPLES:
                raise DatasetError(f"{p}: declares {frames:,} samples, more than vqdraw reads ({MAX_SAMPLES:,})")
            try:  # filled block by block: pages past a truncated file's end are never touched
                mono = np.empty(frames, np.float32)
            except MemoryError:
                raise DatasetError(f"{p}: {frames:,} samples do not fit in memory") from None
            done = 0
            while done < frames:
                block = f.read(min(BLOCK, frames - done), dtype="float32", always_2d=True)
                if not len(block):
                    break
                _check_finite(p, block, done)
                mono[done: done + len(block)] = block[:, 0] if have == 1 else block.mean(axis=1, dtype=np.float32)
                done += len(block)
    except DatasetError:
        raise
    except (RuntimeError, sf.LibsndfileError, OSError, ValueError) as exc:  # LibsndfileError: a RuntimeError
        raise DatasetError(f"{p}: not readable audio ({_short(exc)})") from None
    if done < frames:
        raise DatasetError(f"{p}: truncated audio file ({done} of the {frames} samples its header declares)")
    if done == 0:
        raise DatasetError(f"{p}: no samples (0-length audio)")
    return mono, int(rate)


BLOCK = 1 << 18
"""Frames read (and mixed down) at a time: the file's samples are held once, as float32 mono."""
MAX_SAMPLES = 1 << 34
"""The most samples a file may declare (about 25 days at 8 kHz; 64 GiB as float32)."""


def _check_finite(p, block: np.ndarray, offset: int) -> None:
    """A float WAV may hold NaN or infinity: no mu-law level or spectrum means anything for them."""
    bad = ~np.isfinite(block).all(axis=1)
    if bad.any():
        raise DatasetError(f"{p}: samples are NaN or infinite (the first at sample {offset + int(np.argmax(bad)):,}; "
                           f"{int(bad.sum()):,} of the {len(block):,} read with it); float audio must be finite")


def _check_riff_size(p: Path) -> None:
    """A WAV file shorter than its RIFF header declares is truncated (libsndfile would read what is
    there without a word)."""
    import struct

    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(12)
    if len(head) == 12 and head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        (declared,) = struct.unpack("<I", head[4:8])
        if declared not in (0, 0xFFFFFFFF) and declared + 8 > size:
            raise DatasetError(f"{p}: truncated audio file ({size} bytes, its header declares {declared + 8})")


def _short(exc) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else exc.__class__.__name__


def write_wav(path, samples: np.ndarray, rate: int) -> None:
    """Float samples in [-1, 1] as a 16-bit PCM WAV file (written atomically)."""
    import io

    from ..io import atomic_write_bytes

    sf = _soundfile()
    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(samples, dtype=np.float32), -1, 1), int(rate), subtype="PCM_16", format="WAV")
    atomic_write_bytes(path, buf.getvalue())


def mu_law_encode(x: np.ndarray) -> np.ndarray:
    """Samples in [-1, 1] -> uint8 mu-law levels 0..255 (128 is silence's level), computed
    :data:`BLOCK` samples at a time (memory: the levels plus one block's float64 work)."""
    x = np.asarray(x)
    out = np.empty(x.shape, np.uint8)
    flat, dest = x.reshape(-1), out.reshape(-1)
    for i in range(0, flat.size, BLOCK):
        part = np.clip(flat[i: i + BLOCK].astype(np.float64), -1.0, 1.0)
        y = np.sign(part) * np.log1p(MU * np.abs(part)) / math.log1p(MU)
        dest[i: i + BLOCK] = np.clip(np.rint((y + 1) / 2 * MU), 0, MU)
    return out


def mu_law_decode(k) -> np.ndarray:
    """Mu-law levels (0..255) -> float32 samples in [-1, 1], each at the centre of its level."""
    k = np.asarray(k, dtype=np.float64)
    y = 2 * np.clip(k, 0, MU) / MU - 1
    return (np.sign(y) * np.expm1(np.abs(y) * math.log1p(MU)) / MU).astype(np.float32)


def data_to_samples(data) -> np.ndarray:
    """Model data (B, 1, L) in [0, 1] (a tensor or array) -> float32 samples (B, L)."""
    arr = np.asarray(data.detach().cpu() if hasattr(data, "detach") else data, dtype=np.float64)
    return mu_law_decode(np.rint(arr.reshape(len(arr), -1) * MU))


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``x`` at ``rate`` Hz resampled to ``target`` Hz (scipy's polyphase resampler)."""
    if rate == target:
        return x
    try:
        from scipy.signal import resample_poly
    except ImportError:  # pragma: no cover
        raise DatasetError(f"resampling {rate} Hz audio to {target} Hz needs scipy (pip install scipy)") from None
    g = math.gcd(rate, target)
    up, down = target // g, rate // g
    x = np.asarray(x, dtype=np.float32)
    if len(x) <= 4 * RESAMPLE_CHUNK:
        return resample_poly(x, up, down).astype(np.float32)
    # In pieces, each with `pad` input samples of context on both sides (more than the filter's
    # reach); every piece starts on a multiple of `down` input samples, so its outputs fall on the
    # whole waveform's output grid and the kept ones equal resample_poly of the whole (to rounding).
    n_out = -(-len(x) * up // down)
    out = np.empty(n_out, np.float32)
    step = RESAMPLE_CHUNK // down * down or down
    pad = -(-(40 * max(up, down) // up + 16) // down) * down
    for start in range(0, len(x), step):
        lo, hi = max(0, start - pad), min(len(x), start + step + pad)
        y = resample_poly(x[lo:hi], up, down)
        first = start * up // down
        last = min(n_out, (start + step) * up // down) if start + step < len(x) else n_out
        out[first:last] = y[first - lo * up // down: last - lo * up // down]
    return out


RESAMPLE_CHUNK = 1 << 20
"""Input samples resampled at a time (longer waveforms go in overlapping pieces)."""


def to_clips(samples: np.ndarray, clip: int, *, pad: bool = False) -> np.ndarray:
    """(N, clip, 1) uint8 mu-law clips of consecutive samples; ``pad`` fills a last partial clip
    with silence (level 128 is not exact silence: the padding is cut away by the recorded length)."""
    codes = mu_law_encode(samples)
    n = len(codes) // clip if not pad else -(-len(codes) // clip)
    out = np.full((n * clip,), mu_law_encode(np.zeros(1))[0], dtype=np.uint8)
    out[: min(len(codes), n * clip)] = codes[: n * clip]
    return out.reshape(n, clip, 1)


def audio_files(path) -> list[Path]:
    """The WAV/FLAC files of a folder (recursively, sorted) or the one file given."""
    p = Path(path)
    if p.is_dir():
        from .walk import files_under

        files = [q for q in files_under(p) if q.suffix.lower() in AUDIO_SUFFIXES and not q.name.startswith(".")]
        if not files:
            raise DatasetError(f"{p}: no WAV or FLAC files in this folder")
        return files
    if not p.exists():
        raise DatasetError(f"{p}: no such file or folder")
    return [p]


def split_files(files: list[Path], root: Path, split: str) -> list[Path]:
    """The files of one split (see the module docstring: CRC-32 of the relative path % 10 == 0 is test)."""
    if split not in ("train", "test"):
        raise DatasetError(f"audio: unknown split {split!r} (train or test)")
    def rel(f):
        return f.relative_to(root).as_posix() if f != root else f.name
    test = [f for f in files if zlib.crc32(rel(f).encode()) % 10 == 0]
    if not test or len(test) == len(files):
        test = files[-1:]
    chosen = set(test)
    return test if split == "test" else [f for f in files if f not in chosen]


def load_audio_path(path, split: str = "train", rate: int = DEFAULT_RATE, clip: int = DEFAULT_CLIP,
                    name: str | None = None, *, mel: tuple[int, int] | None = None) -> Dataset:
    """Clips (N, clip, 1) of mu-law levels from a folder of WAV/FLAC files or one file, resampled to
    ``rate``; the split is by file (one file: by its clips). ``mel=(bands, frames)``: log-mel blocks
    (N, bands, frames, 1) for a speech model instead (:func:`vqdraw.data.spectral.mel_blocks`; the
    train split's blocks overlap by half, the test split's do not)."""
    root = Path(path)
    name = name or f"audio:{path}"
    files = audio_files(root)
    if split not in ("train", "test"):
        raise DatasetError(f"{name}: unknown split {split!r} (train or test)")
    if mel is None:
        def cut(samples, part):
            return to_clips(samples, clip)
        empty, unit = np.zeros((0, clip, 1), np.uint8), f"clip of {clip} samples ({clip / rate:.3f} s)"
    else:
        from .spectral import HOP, mel_blocks

        bands, frames = mel

        def cut(samples, part):
            return mel_blocks(samples, bands, frames, rate, stride=frames // 2 if part == "train" else frames)
        empty, unit = np.zeros((0, bands, frames, 1), np.uint8), f"block of {frames} frames ({frames * HOP / rate:.3f} s)"
    if len(files) == 1:
        samples, have = read_audio(files[0])
        clips = cut(resample(samples, have, rate), "test")
        n = len(clips) * 9 // 10
        clips = clips[:n] if split == "train" else clips[n:]
    else:
        chosen = split_files(files, root, split)
        parts = []
        for f in chosen:
            samples, have = read_audio(f)
            parts.append(cut(resample(samples, have, rate), split))
        clips = np.concatenate(parts) if parts else empty
    if not len(clips):
        raise DatasetError(f"{name}: the {split} split has no {unit}")
    return Dataset(np.ascontiguousarray(clips), None, name)


def asterisk_dir() -> Path | None:
    """The installed folder of Debian's English prompts, or None."""
    for d in ASTERISK_DIRS:
        if Path(d).is_dir() and any(Path(d).glob("*.wav")):
            return Path(d)
    return None


def asterisk_missing() -> str:
    return (f"the asterisk-en dataset (Debian's recorded English telephone prompts, {ASTERISK_LICENCE}) is not "
            f"installed; on Debian or Ubuntu: apt-get install {ASTERISK_PACKAGE}")


def load_asterisk_en(split: str = "train", data_dir=None, rate: int = DEFAULT_RATE,
                     clip: int = DEFAULT_CLIP, *, mel: tuple[int, int] | None = None) -> Dataset:
    """Debian's asterisk-core-sounds-en-wav prompts (8 kHz mono WAV) as clips (or ``mel`` blocks),
    split by file."""
    folder = asterisk_dir()
    if folder is None:
        raise DatasetError(asterisk_missing())
    return load_audio_path(folder, split, rate, clip, name=f"asterisk-en-{split}", mel=mel)
