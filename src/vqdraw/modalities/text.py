"""Text (1, L) of characters: UTF-8 files and the text datasets in, text files out (the library
itself, one ``.vqd`` per text and the stage report, is :mod:`vqdraw.compress.text`)."""

from __future__ import annotations

from pathlib import Path

from .base import Modality, evaluation_loss

TEXT_SUFFIXES = (".txt", ".text", ".md", ".rst", ".raw")


class TextModality(Modality):
    name = "text"
    noun = "sequence"
    give = "UTF-8 text files (or text:PATH, text-embedded, wikitext2)"
    file_suffixes = TEXT_SUFFIXES
    pair_suffix = ".txt"
    run_outputs = ("samples.txt", "reconstructions.txt", "stages.txt", "stages.png")
    element = "character"
    headline = ("test_accuracy", "acc", ".3f")

    def test_metrics(self, model, data, recon):
        """The fraction of characters reconstructed exactly."""
        import torch

        levels = model.config.categories - 1
        same = torch.round(recon * levels) == torch.round(data * levels)
        return {"test_accuracy": same.float().mean().item()}


    def holds_path(self, path) -> bool:
        """A text file, or a folder of text files with no images or voxel grids."""
        from ..data.voxels import VOXEL_SUFFIXES
        from ..data.images import IMAGE_SUFFIXES
        from .base import _suffixes

        suffixes = _suffixes(path)
        return bool(suffixes & set(TEXT_SUFFIXES)) and (
            not Path(path).is_dir() or not suffixes & (set(IMAGE_SUFFIXES) | set(VOXEL_SUFFIXES)))

    def sample_name(self, seed: int) -> str:
        return f"samples-{seed}.txt"  # not the run's own samples.txt

    # -------------------------------------------------------------- inputs
    def load_files(self, model, files, *, count=None, fit=False):
        from ..compress.text import text_data_for

        return text_data_for(model, read_texts(files))

    # -------------------------------------------------------------- outputs
    def write_pairs(self, model, data, recon, out, *, stages, title=""):
        from ..io import atomic_write_bytes
        from ..compress.text import format_lines, sequences_to_text

        orig, rec = sequences_to_text(data), sequences_to_text(recon)
        same = sum(a == b for o, r in zip(orig, rec) for a, b in zip(o, r))
        total = sum(len(o) for o in orig)
        lines = []
        for o, r in zip(orig, rec):
            lines += ["original:      " + format_lines([o]).rstrip("\n"),
                      "reconstructed: " + format_lines([r]).rstrip("\n"), ""]
        atomic_write_bytes(out, "\n".join(lines).encode())
        return ("\n".join(lines[:9]) + "\n"
                f"{out}: {len(orig)} sequences of {model.config.data_shape[-1]} characters, {stages} stages, "
                f"character accuracy {same / max(total, 1):.4f}")

    def write_samples(self, model, out, *, count, stages, seed, codes=None, progress=True):
        from ..io import atomic_writer
        from ..compress.text import format_lines, sequences_to_text
        from .base import SAMPLE_CHUNK, progress_bar, sample_chunks

        first: list[str] = []
        bar = progress_bar(count, chunk=SAMPLE_CHUNK, desc="sample", unit=self.noun, enabled=progress)
        try:
            with atomic_writer(out) as f:
                for drawn in sample_chunks(model, count, stages=stages, seed=seed, codes=codes):
                    lines = sequences_to_text(drawn)
                    first += lines[: 5 - len(first)]
                    f.write(format_lines(lines).encode())
                    bar.update(len(lines))
        finally:
            bar.close()
        return format_lines(first) + str(out)

    def write_stages(self, model, data, out, *, max_stages, title=""):
        from ..compress.text import default_stage_points

        points = [s for s in default_stage_points(model.stages) if s <= max_stages] or [1]
        text = save_stages_text(model, data, Path(out).with_suffix(".txt"), out, stages=points, title=title)
        return text + str(out)

    def encode(self, model, files, out, options):
        """The text files (joined) -> one .vqd file recording the text's length."""
        from ..compress.text import encode_text, write_text_codes
        from .base import progress_bar, write_codes_file

        stages, batch, prior = options.stages, options.batch, options.prior
        text = read_texts(files)
        length = model.config.data_shape[-1]
        chunks = -(-len(text) // length)
        bar = progress_bar(chunks, chunk=batch, desc="encode", unit=self.noun, enabled=options.progress)
        try:
            codes = encode_text(model, text, stages=stages, policy=options.policy, batch=batch, progress=bar.update)
        finally:
            bar.close()
        data = write_codes_file(out, lambda p: write_text_codes(model, codes, len(text), prior=p), prior)
        return (f"{out}: {len(text)} characters in {chunks} chunk{'s' if chunks != 1 else ''} of {length}, "
                f"{stages or model.stages} stages of K={model.options}, {len(data)} bytes "
                f"= {8 * len(data) / max(chunks, 1):.1f} bits per chunk, "
                f"{8 * len(data) / max(len(text), 1):.3f} bits per character (lossy)")

    def decode(self, model, data, out, options, *, source):
        """OUT is a .txt file, or a folder that gets decoded.txt; written ``options.batch`` chunks at a time."""
        from ..io import atomic_writer
        from ..compress.text import decompress_text_pieces
        from .base import progress_bar

        stages, batch, prior, progress = options.stages, options.batch, options.prior, options.progress
        vqd, pieces = decompress_text_pieces(model, data, stages=stages, prior=prior, batch=batch)
        target = out if out.suffix.lower() in TEXT_SUFFIXES else out / "decoded.txt"
        target.parent.mkdir(parents=True, exist_ok=True)
        bar = progress_bar(vqd.count, chunk=batch, desc="decode", unit=self.noun, enabled=progress)
        characters = done = 0
        try:
            with atomic_writer(target) as f:
                for piece in pieces:
                    f.write(piece.encode("utf-8"))
                    characters += len(piece)
                    step = min(batch, vqd.count - done)
                    done += step
                    bar.update(step)
        finally:
            bar.close()
        return f"{target}: {characters} characters decoded from {source}"

    # -------------------------------------------------------------- training
    def write_run_outputs(self, model, run_dir, test_data, title=""):
        write_text_outputs(model, run_dir, test_data)

    def summary(self, metrics, config=None):
        import math

        out = f"test cross-entropy {evaluation_loss(metrics) / math.log(2):.3f} bits per character"
        return out + (f", character accuracy {metrics['test_accuracy']:.3f}" if "test_accuracy" in metrics else "")


def read_texts(paths) -> str:
    """The text of the files/folders given (UTF-8; several are joined by newlines)."""
    from ..data.text import read_text_paths
    from ..errors import InputError

    if not paths:
        raise InputError("no text files given")
    return read_text_paths(paths)


def write_text_outputs(model, run_dir, test_data, *, samples: int = 20) -> None:
    """samples.txt, reconstructions.txt (original above reconstruction) and stages.txt in a run folder
    (the text counterparts of the image pictures; seeded)."""
    from ..io import atomic_write_bytes
    from ..compress.text import format_lines, reconstruct_lines, sample_lines, sequences_to_text

    import torch

    run_dir = Path(run_dir)
    g = torch.Generator().manual_seed(0)
    atomic_write_bytes(run_dir / "samples.txt", format_lines(sample_lines(model, samples, generator=g)).encode())
    x = test_data[:8]
    recon = reconstruct_lines(model, x)
    pairs = []
    for orig, rec in zip(sequences_to_text(x), recon):
        pairs += ["original:      " + format_lines([orig]).rstrip("\n"),
                  "reconstructed: " + format_lines([rec]).rstrip("\n"), ""]
    atomic_write_bytes(run_dir / "reconstructions.txt", ("\n".join(pairs)).encode())
    save_stages_text(model, x[:1], run_dir / "stages.txt", run_dir / "stages.png")


def save_stages_text(model, data, txt_path, png_path=None, stages=None, title: str = "") -> str:
    """The first sequence of ``data`` decoded from its first s codes for each stage point s
    (default: 1, 2, 5, 10, ..., N), as text lines (written to ``txt_path``) and as a picture
    (``png_path``: :func:`vqdraw.evaluate.plots.save_text_stages`). Returns the text."""
    from ..io import atomic_write_bytes
    from ..compress.text import default_stage_points, format_lines, sequences_to_text, stage_lines

    points = default_stage_points(model.stages) if stages is None else list(stages)
    rows = stage_lines(model, data[:1], points)
    text = "".join(f"stage {s:3d}: " + format_lines(lines) for s, lines in rows)
    atomic_write_bytes(txt_path, text.encode())
    if png_path is not None:
        from ..evaluate.plots import save_text_stages

        original = sequences_to_text(data[:1])[0]
        save_text_stages([(s, lines[0]) for s, lines in rows], original, png_path, title=title)
    return text
