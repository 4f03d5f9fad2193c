"""A VQ-DRAW audio or speech model against Codec2 and Opus on held-out speech files.

    python benchmarks/audio_baselines.py MODEL [--dataset asterisk-en] [--out DIR] [--picture PNG]
    python benchmarks/audio_baselines.py MODEL --dataset audio:/path/to/other/speaker --split all

For every held-out (test-split) file of the dataset (``--split all``: every file of a folder the
model never saw, e.g. another speaker), at the model's sample rate:
  * VQ-DRAW: the file through a real .vqd file (vqdraw.modalities.audio.compress_audio, or
    vqdraw.modalities.speech.compress_speech for a speech model) at code prefixes of 8, 16, ... N
    stages; greedy codes are found once, a prefix's file holds their first s;
  * Codec2 (c2enc/c2dec, raw 16-bit 8 kHz, headerless bit files) at 700C, 1200 and 3200 bit/s;
  * Opus (opusenc --speech --bitrate B, opusdec --rate 8000) at 6, 8 and 12 kbit/s, whole Ogg files
    (container headers included: on short prompts they are a large part of the bits).
Bits per second = 8 x the compressed files' bytes / the files' seconds. SNR (dB) is over all
samples of all files, after aligning each decoded file to its original by the lag (within
+-60 ms) that maximises their correlation (codec delays; VQ-DRAW has none); STOI (pystoi) and
narrowband PESQ (the ``pesq`` package, when installed; ITU-T P.862, MOS-LQO) are means over files.
Prints one JSON object and writes it to DIR/NAME.json (``--name``, default audio_baselines).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def align(ref: np.ndarray, out: np.ndarray, max_lag: int) -> np.ndarray:
    """``out`` shifted by the lag in [-max_lag, max_lag] that best correlates it with ``ref``, cut or
    zero-padded to ref's length."""
    out = np.asarray(out, dtype=np.float64)
    best, best_lag = -np.inf, 0
    n = len(ref)
    padded = np.concatenate([np.zeros(max_lag), out, np.zeros(max_lag + n)])
    for lag in range(-max_lag, max_lag + 1):
        seg = padded[max_lag + lag: max_lag + lag + n]
        c = float(np.dot(ref, seg))
        if c > best:
            best, best_lag = c, lag
    return padded[max_lag + best_lag: max_lag + best_lag + n]


def pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1) * 32767).round().astype("<i2").tobytes()


def from_pcm16(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype="<i2").astype(np.float64) / 32767


def codec2(x: np.ndarray, mode: str, tmp: Path) -> tuple[np.ndarray, int]:
    raw, bits, dec = tmp / "in.raw", tmp / "c2.bit", tmp / "out.raw"
    raw.write_bytes(pcm16(x))
    subprocess.run(["c2enc", mode, str(raw), str(bits)], check=True, capture_output=True)
    subprocess.run(["c2dec", mode, str(bits), str(dec)], check=True, capture_output=True)
    return from_pcm16(dec.read_bytes()), bits.stat().st_size


def opus(x: np.ndarray, kbps: float, rate: int, tmp: Path) -> tuple[np.ndarray, int]:
    raw, enc, dec = tmp / "in.raw", tmp / "o.opus", tmp / "out.raw"
    raw.write_bytes(pcm16(x))
    subprocess.run(["opusenc", "--quiet", "--raw", "--raw-rate", str(rate), "--raw-chan", "1", "--speech",
                    "--bitrate", str(kbps), str(raw), str(enc)], check=True, capture_output=True)
    subprocess.run(["opusdec", "--quiet", "--rate", str(rate), "--force-wav", str(enc), str(tmp / "out.wav")],
                   check=True, capture_output=True)
    import soundfile as sf

    y, _ = sf.read(str(tmp / "out.wav"))
    del dec
    return np.asarray(y, dtype=np.float64).reshape(len(y), -1)[:, 0], enc.stat().st_size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--dataset", default="asterisk-en")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--picture", default=None, help="PNG of STOI and SNR against bits per second")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N held-out files (0: all)")
    ap.add_argument("--prefixes", type=int, nargs="+", default=None,
                    help="VQ-DRAW stage counts to measure (default: 8, 16, ..., N)")
    ap.add_argument("--split", choices=("test", "all"), default="test",
                    help="the dataset's held-out files (test), or every file of a folder the model never saw")
    ap.add_argument("--name", default="audio_baselines", help="the JSON file's name (without .json)")
    ap.add_argument("--examples", default=None,
                    help="folder for listening examples: the first file as original.wav and decoded by each system")
    args = ap.parse_args()

    import torch
    from pystoi import stoi

    from vqdraw.compress.bitstream import write_vqd
    from vqdraw.data import audio as adata
    from vqdraw.core.model import VQDraw
    from vqdraw.modalities.audio import compress_audio, decompress_audio, read_for_model
    from vqdraw.modalities.speech import compress_speech, decompress_speech
    try:
        from pesq import pesq
    except ImportError:  # the pesq package is optional
        pesq = None

    torch.set_grad_enabled(False)
    model = VQDraw.load(args.model).eval()
    rate, length = model.config.sample_rate, model.config.data_shape[-1]
    speech = model.config.modality == "speech"
    compress, decompress = (compress_speech, decompress_speech) if speech else (compress_audio, decompress_audio)
    modality = "speech" if speech else "audio"
    if args.dataset == "asterisk-en":
        root = adata.asterisk_dir()
        if root is None:
            sys.exit(adata.asterisk_missing())
    else:
        root = Path(args.dataset.removeprefix("audio:"))
    files = adata.audio_files(root)
    files = files if args.split == "all" else adata.split_files(files, root, "test")
    if args.limit:
        files = files[: args.limit]
    originals = [read_for_model(model, f).astype(np.float64) for f in files]
    seconds = sum(len(x) for x in originals) / rate
    max_lag = int(0.06 * rate)
    examples = Path(args.examples) if args.examples else None
    if examples:
        examples.mkdir(parents=True, exist_ok=True)
        adata.write_wav(examples / "original.wav", originals[0], rate)

    points = sorted(set(args.prefixes or [*range(8, model.stages + 1, 8), model.stages]))
    systems: dict[str, dict] = {}
    heard: dict[str, np.ndarray] = {}  # the first file as each system decodes it (--examples)

    def record(name, bitrate_nominal, decoded, nbytes, t):
        aligned = [align(x, y, max_lag) for x, y in zip(originals, decoded)]
        err = sum(float(np.sum((x - y) ** 2)) for x, y in zip(originals, aligned))
        sig = sum(float(np.sum(x * x)) for x in originals)
        systems[name] = {
            "nominal_bits_per_second": bitrate_nominal,
            "bits_per_second": 8 * nbytes / seconds,
            "bytes": nbytes,
            "snr_db": 10 * math.log10(sig / err) if err else math.inf,
            "stoi": float(np.mean([stoi(x, y, rate, extended=False) for x, y in zip(originals, aligned)])),
            "seconds_to_code": t,
        }
        if pesq is not None and rate in (8000, 16000):
            scores = []
            for x, y in zip(originals, aligned):
                try:
                    scores.append(float(pesq(rate, x, y, "nb")))
                except Exception:  # pesq refuses files with no speech it can find
                    pass
            systems[name]["pesq_nb"] = float(np.mean(scores)) if scores else None
            systems[name]["pesq_files"] = len(scores)
        if examples:
            slug = name.lower().replace(" ", "-").replace("/", "")
            adata.write_wav(examples / f"{slug}.wav", aligned[0], rate)
            heard[name] = aligned[0]
        print(name, json.dumps(systems[name]), file=sys.stderr, flush=True)

    # VQ-DRAW: codes once, then files of each prefix
    t0 = time.perf_counter()
    full = [compress(model, x.astype(np.float32)) for x in originals]
    t_enc = time.perf_counter() - t0
    from vqdraw.compress.bitstream import read_vqd

    for s in points:
        decoded, nbytes = [], 0
        for x, data in zip(originals, full):
            vqd = read_vqd(data)
            part = write_vqd(vqd.codes[:, :s], vqd.K, vqd.data_shape, vqd.fingerprint, modality=modality,
                             length=vqd.length, sample_rate=vqd.sample_rate) if s < vqd.stages else data
            nbytes += len(part)
            y, _ = decompress(model, part)
            decoded.append(y.astype(np.float64))
        bits_clip = math.ceil(s * math.log2(model.options))
        samples_per_item = length * 64 if speech else length  # a speech block: `length` frames 64 samples apart
        record(f"VQ-DRAW {s} stages", bits_clip * rate / samples_per_item, decoded, nbytes, t_enc)

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if shutil.which("c2enc"):
            for mode, bps in (("700C", 700), ("1200", 1200), ("3200", 3200)):
                t0 = time.perf_counter()
                out = [codec2(x, mode, tmp) for x in originals]
                record(f"Codec2 {mode}", bps, [y for y, _ in out], sum(n for _, n in out), time.perf_counter() - t0)
        if shutil.which("opusenc"):
            for kbps in (6, 8, 12):
                t0 = time.perf_counter()
                out = [opus(x, kbps, rate, tmp) for x in originals]
                record(f"Opus {kbps} kbit/s", kbps * 1000, [y for y, _ in out], sum(n for _, n in out),
                       time.perf_counter() - t0)

    report = {"model": str(args.model), "dataset": args.dataset, "files": len(files), "seconds": seconds,
              "file_names": [f.relative_to(root).as_posix() if f != root else f.name for f in files],
              "split": args.split, "sample_rate": rate, "model_stages": model.stages, "model_options": model.options,
              "clip_samples": length, "systems": systems}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(report, indent=1) + "\n")
    if args.picture:
        picture(report, args.picture)
    if examples:
        spectrograms(originals[0], heard, rate, examples / "spectrograms.png", report["file_names"][0])
    print(json.dumps(report, indent=1))
    return 0


def spectrograms(original: np.ndarray, heard: dict, rate: int, path, name: str) -> None:
    """The first file's spectrogram, original and as each system decodes it, one row each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vqdraw.modalities.audio import spectrogram

    rows = [("original", original)] + list(heard.items())
    fig, axes = plt.subplots(len(rows), 1, figsize=(8, 1.05 * len(rows) + 0.5), squeeze=False)
    for ax, (label, y) in zip(axes[:, 0], rows):
        ax.imshow(spectrogram(y), origin="lower", aspect="auto", cmap="magma", vmin=-60, vmax=30,
                  extent=(0, len(y) / rate, 0, rate / 2000))
        ax.set_ylabel(label.replace(" kbit/s", "k").replace(" stages", " st."), fontsize=6, rotation=0,
                      ha="right", va="center")
        ax.tick_params(labelsize=5)
    axes[-1, 0].set_xlabel("seconds (0-4 kHz)", fontsize=6)
    fig.suptitle(f"{name}: spectrogram as each system decodes it", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def picture(report: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    groups = {"VQ-DRAW": ("#1f5fbf", "o-"), "Codec2": ("#cf222e", "s-"), "Opus": ("#1a7f37", "^-")}
    for family, (colour, style) in groups.items():
        rows = [(k, v) for k, v in report["systems"].items() if k.startswith(family)]
        if not rows:
            continue
        rows.sort(key=lambda kv: kv[1]["bits_per_second"])
        xs = [v["bits_per_second"] for _, v in rows]
        for ax, key in zip(axes, ("stoi", "snr_db")):
            ax.plot(xs, [v[key] for _, v in rows], style, color=colour, label=family, markersize=4)
    for ax, label in zip(axes, ("STOI (higher is better)", "SNR, dB (after alignment)")):
        ax.set_xscale("log")
        ax.set_xlabel("bits per second of the real files")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{report['files']} {'held-out ' if report.get('split') != 'all' else ''}files of {report['dataset']} ({report['seconds']:.0f} s, "
                 f"{report['sample_rate']} Hz)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
