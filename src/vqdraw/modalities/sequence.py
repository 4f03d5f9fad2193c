"""Plain sequences (C, L) in [0, 1] of a rank-1 model that is neither text nor audio: datasets in,
``.npy`` arrays and line plots out. The line plots serve audio's waveform pictures too."""

from __future__ import annotations

from .base import Modality, decode_to_folder, plural


class SequenceModality(Modality):
    name = "sequence"
    noun = "sequence"
    give = "sequences"
    file_suffixes = ()
    run_outputs = ("samples.png", "reconstructions.png", "stages.png")

    def write_pairs(self, model, data, recon, out, *, stages, title=""):
        from ..compress.bitstream import bits_per_image
        from ..evaluate.metrics import mse

        bits = bits_per_image(model.options, stages)
        save_line_pairs(data, recon, out, title=f"{title}; {stages} stages, {bits} bits")
        return f"{out}: {len(data)} sequences, {bits} bits each, MSE {mse(data, recon).mean().item():.5f}"

    def write_samples(self, model, out, *, count, stages, seed, codes=None, progress=True):
        """A picture of the first 8 samples (only those are decoded: the codes drawn are the
        same whatever the count)."""
        import torch

        from .base import sample_chunks

        shown = min(count if codes is None else int(codes.shape[0]), 8)
        drawn = sample_chunks(model, shown, stages=stages, seed=seed,
                              codes=None if codes is None else codes[:shown], chunk=8)
        save_lines(torch.cat(list(drawn)) if shown else torch.zeros((0, *model.config.data_shape)), out,
                   title="samples")
        return str(out)

    def write_stages(self, model, data, out, *, max_stages, title=""):
        save_line_stages(model, data, out, max_stages=max_stages, title=title)
        return str(out)

    def encode(self, model, files, out, options):
        from ..errors import InputError

        raise InputError("a sequence model reads no files; encode its data with vqdraw.compress.codec.compress")

    def decode(self, model, data, out, options, *, source):
        """One ``.npy`` array (C, L) of values in [0, 1] per sequence."""
        vqd = decode_to_folder(self, model, data, out, options, suffix=".npy", save=_save_npy)
        return f"{out}: {plural(vqd.count, 'sequence')} decoded from {source} as .npy arrays"

    def write_run_outputs(self, model, run_dir, test_data, title=""):
        import torch

        g = torch.Generator().manual_seed(0)
        save_lines(model.sample(8, generator=g), run_dir / "samples.png", title="samples")
        x = test_data[:8]
        save_line_pairs(x, model.reconstruct(x), run_dir / "reconstructions.png", title=title)
        save_line_stages(model, x[:1], run_dir / "stages.png", title=title)


def _save_npy(item, path) -> None:
    import io

    import numpy as np

    from ..io import atomic_write_bytes

    buf = io.BytesIO()
    np.save(buf, item.detach().cpu().float().numpy(), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def save_lines(data, path, title: str = "", rate: int | None = None):
    """Each sequence's first channel as a line, one panel each (at most 8)."""
    from ..evaluate.plots import figure, save_figure

    data = data.detach().cpu().float()[:8]
    fig = figure(8, 0.9 * len(data) + 0.6)
    for i, x in enumerate(data):
        ax = fig.add_subplot(len(data), 1, i + 1)
        _line(ax, x[0], rate)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def save_line_pairs(data, recon, path, title: str = "", rate: int | None = None):
    """Each original (grey) under its reconstruction (blue), one panel per sequence (at most 8)."""
    from ..evaluate.plots import figure, save_figure

    data, recon = data.detach().cpu().float()[:8], recon.detach().cpu().float()[:8]
    fig = figure(8, 0.9 * len(data) + 0.6)
    for i, (x, r) in enumerate(zip(data, recon)):
        ax = fig.add_subplot(len(data), 1, i + 1)
        _line(ax, x[0], rate, colour="#999999", width=1.2)
        _line(ax, r[0], rate, colour="#1f5fbf")
    fig.suptitle((title + "\n" if title else "") + "original (grey), reconstruction (blue)", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def save_line_stages(model, data, path, max_stages: int = 20, title: str = "", rate: int | None = None,
                     spectrogram=None):
    """The first sequence decoded from its first s codes, s = 1, 2, 5, 10, ... (at most
    ``max_stages``), one panel each under the original; ``spectrogram(x) -> (freq, time) array``
    adds a spectrogram beside each panel."""
    from ..compress.bitstream import bits_per_image
    from ..evaluate.plots import figure, save_figure
    from ..compress.text import default_stage_points

    x = data[:1]
    points = [s for s in default_stage_points(model.stages) if s <= max_stages] or [1]
    codes = model.encode(x, stages=max(points))
    rows = [("original", x[0, 0].detach().cpu().float())]
    rows += [(f"{s} stage{'s' if s != 1 else ''}, {bits_per_image(model.options, s)} bits",
              model.decode(codes, stages=s)[0, 0].detach().cpu().float()) for s in points]
    cols = 2 if spectrogram is not None else 1
    fig = figure(5 * cols + 1, 0.95 * len(rows) + 0.6)
    for i, (label, line) in enumerate(rows):
        ax = fig.add_subplot(len(rows), cols, cols * i + 1)
        _line(ax, line, rate, colour="#999999" if i == 0 else "#1f5fbf")
        ax.set_ylabel(label, fontsize=6, rotation=0, ha="right", va="center")
        if spectrogram is not None:
            ax = fig.add_subplot(len(rows), cols, cols * i + 2)
            ax.imshow(spectrogram(line), origin="lower", aspect="auto", cmap="magma")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle((title + "\n" if title else "") + "decoded from the first s codes", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _line(ax, y, rate, colour="#1f5fbf", width=0.6):
    import numpy as np

    t = np.arange(len(y)) / rate if rate else np.arange(len(y))
    ax.plot(t, y.numpy(), color=colour, linewidth=width)
    ax.set_xlim(t[0], t[-1] if len(t) > 1 else 1)
    ax.tick_params(labelsize=5)
