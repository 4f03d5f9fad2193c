"""Pictures a person would rather look at: image grids, learning curves, stage-by-stage figures.

Volumes (C, D, H, W) are drawn as three depth-shaded projections side by side (:func:`volume_views`);
:func:`save_samples`, :func:`save_reconstructions` and :func:`save_stages` hand a volume model to
their ``save_volume_*`` counterparts.

Figures are ``matplotlib.figure.Figure`` objects drawn without pyplot, so no matplotlib backend
is chosen or switched here: they render to PNG with Agg whatever backend the caller uses.
"""

from __future__ import annotations

import io
import math
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..io import atomic_write_bytes
from .metrics.distortion import psnr


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) floats in [0, 1] -> (B, H, W, C) uint8 (rounded)."""
    x = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def grid(images: torch.Tensor, ncol: int | None = None, pad: int = 2, scale: int = 1) -> Image.Image:
    """Tile images (B, C, H, W) in [0, 1] into one picture, `ncol` per row, on a grey background."""
    arr = to_uint8(images)
    b, h, w, c = arr.shape
    ncol = ncol or max(1, math.ceil(math.sqrt(b)))
    nrow = max(1, math.ceil(b / ncol))
    canvas = np.full((pad + nrow * (h + pad), pad + ncol * (w + pad), c), 128, dtype=np.uint8)
    for i in range(b):
        r, col = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        canvas[y : y + h, x : x + w] = arr[i]
    img = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return img


def save_png(img: Image.Image, path: str | Path) -> Path:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def save_grid_png(chunks, count: int, path: str | Path, *, tile_shape: tuple[int, int, int],
                  ncol: int | None = None, pad: int = 2, scale: int = 1, progress=None) -> Path:
    """Pixel for pixel what ``save_png(grid(images, ncol, pad, scale), path)`` writes, for the
    ``count`` images (C, H, W) = ``tile_shape`` in [0, 1] that ``chunks`` yields in batches
    (B_i, C, H, W), one batch after another: each row of the grid is drawn, filtered and
    compressed into the PNG file as soon as its images have come, so memory holds a row of the
    grid and a batch, never the whole picture (``sample -n 100000``). The file is written
    atomically (:func:`vqdraw.io.atomic_writer`); ``progress.update(k)`` is called per batch."""
    from ..io import atomic_writer

    c, h, w = (int(v) for v in tile_shape)
    ncol = ncol or max(1, math.ceil(math.sqrt(count)))
    nrow = max(1, math.ceil(count / ncol))
    width, height = pad + ncol * (w + pad), pad + nrow * (h + pad)
    with atomic_writer(path) as f:
        png = _PngStream(f, width * scale, height * scale, c)
        png.rows(_scaled(np.full((pad, width, c), 128, np.uint8), scale))
        pending = np.empty((0, h, w, c), np.uint8)
        written = 0  # rows of the grid
        for images in chunks:
            pending = np.concatenate([pending, to_uint8(images)])
            if progress is not None:
                progress.update(len(images))
            while len(pending) >= ncol:
                png.rows(_scaled(_grid_row(pending[:ncol], ncol, pad, w), scale))
                pending, written = pending[ncol:], written + 1
        while written < nrow:  # the last, partly filled row (and grey rows if fewer images came)
            png.rows(_scaled(_grid_row(pending[:ncol], ncol, pad, w), scale))
            pending, written = pending[ncol:], written + 1
        png.finish()
    return Path(path)


def _grid_row(tiles: np.ndarray, ncol: int, pad: int, w: int) -> np.ndarray:
    """One row of :func:`grid`'s canvas: the tiles (B <= ncol, H, W, C) then ``pad`` grey rows."""
    b, h, _, c = tiles.shape
    band = np.full((h + pad, pad + ncol * (w + pad), c), 128, dtype=np.uint8)
    for i in range(b):
        x = pad + i * (w + pad)
        band[:h, x: x + w] = tiles[i]
    return band


def _scaled(band: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling by a whole factor (what ``Image.resize(NEAREST)`` does then)."""
    if scale == 1:
        return band
    return np.repeat(np.repeat(band, scale, axis=0), scale, axis=1)


class _PngStream:
    """An 8-bit greyscale (C = 1) or RGB (C = 3) PNG written row by row to a binary file: each
    row filtered with the filter of least absolute sum (libpng's and Pillow's heuristic), the
    rows deflated as one zlib stream into IDAT chunks of about 64 KiB."""

    def __init__(self, f, width: int, height: int, channels: int):
        import zlib

        if channels not in (1, 3):
            raise ValueError(f"a PNG grid needs 1 or 3 channels, got {channels}")
        self.f, self.bpp, self.rows_left = f, channels, height
        self.previous = np.zeros(width * channels, dtype=np.uint8)
        self.z = zlib.compressobj(6)
        self.out = bytearray()
        f.write(b"\x89PNG\r\n\x1a\n")
        self._chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0 if channels == 1 else 2, 0, 0, 0))

    def _chunk(self, kind: bytes, data: bytes) -> None:
        import zlib

        self.f.write(struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data)))

    def rows(self, band: np.ndarray) -> None:
        """Append rows (R, width, C) uint8."""
        if not len(band):
            return
        raw = band.reshape(len(band), -1).astype(np.int16)
        up = np.vstack([self.previous[None].astype(np.int16), raw[:-1]])
        left = np.zeros_like(raw)
        left[:, self.bpp:] = raw[:, :-self.bpp]
        upleft = np.zeros_like(raw)
        upleft[:, self.bpp:] = up[:, :-self.bpp]
        pa, pb, pc = np.abs(up - upleft), np.abs(left - upleft), np.abs(left + up - 2 * upleft)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
        filtered = np.stack([raw, raw - left, raw - up, raw - (left + up) // 2, raw - paeth]).astype(np.uint8)
        cost = np.minimum(filtered, 256 - filtered.astype(np.int16)).sum(axis=2, dtype=np.int64)
        best = cost.argmin(axis=0)  # the first of the cheapest, in the order none, sub, up, average, paeth
        lines = np.empty((len(raw), raw.shape[1] + 1), dtype=np.uint8)
        lines[:, 0] = best
        lines[:, 1:] = filtered[best, np.arange(len(raw))]
        self.previous = band[-1].reshape(-1).copy()
        self.rows_left -= len(band)
        self.out += self.z.compress(lines.tobytes())
        if len(self.out) >= 1 << 16:
            self._chunk(b"IDAT", bytes(self.out))
            self.out.clear()

    def finish(self) -> None:
        if self.rows_left:
            raise ValueError(f"PNG stream ended {self.rows_left} rows short")
        self.out += self.z.flush()
        self._chunk(b"IDAT", bytes(self.out))
        self._chunk(b"IEND", b"")


def figure(width: float, height: float, dpi: int = 110):
    """A matplotlib Figure that belongs to no pyplot window and touches no backend."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=dpi)


def save_figure(fig, path: str | Path) -> Path:
    """Write a matplotlib figure as a PNG (atomically, rendered with Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def describe_model(config, dataset: str | None = None, name: str | None = None) -> str:
    """A figure title: the model's `name` when given (``pretrained:mnist``), else the preset the
    model config is (or "custom"), the dataset, the code.

    e.g. ``"VQ-DRAW, mnist preset, on mnist-embedded: 28x28x1, K=64, N=10 (60-bit codes)"``.
    """
    from ..compress.bitstream import bits_per_image
    from ..core.config import PRESETS

    preset = next((n for n, p in PRESETS.items() if p.model == config), None)
    c, *sizes = config.data_shape
    dims = f"{sizes[1]}x{sizes[0]}x{c}" if len(sizes) == 2 else "x".join(map(str, sizes)) + f"x{c}"
    where = f" on {dataset}" if dataset else ""
    kind = name or (f"{preset} preset" if preset else "custom model")
    return (f"VQ-DRAW, {kind}{where}: {dims}, K={config.options}, N={config.stages} "
            f"({bits_per_image(config.options, config.stages)}-bit codes)")


def _show(ax, img: Image.Image) -> None:
    ax.imshow(np.asarray(img), cmap="gray" if img.mode == "L" else None, vmin=0, vmax=255,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)


def _cell_centres(count: int, size: int, pad: int, scale: int) -> list[float]:
    return [scale * (pad + i * (size + pad) + size / 2) - 0.5 for i in range(count)]


def save_samples(model, path: str | Path, n: int = 100, seed: int = 0) -> Path:
    """A grid of `n` samples decoded from uniformly random codes."""
    if model.config.rank == 3:
        return save_volume_samples(model, path, n=min(n, VOLUME_SAMPLES), seed=seed)
    g = torch.Generator().manual_seed(seed)
    return save_png(grid(model.sample(n, generator=g), scale=_scale(model)), path)


def save_pairs(images: torch.Tensor, recon: torch.Tensor, path: str | Path, *, scale: int = 1,
               per_row: int = 10, title: str = "") -> Path:
    """Pairs side by side, `per_row` pairs a row: the original, then its reconstruction, each pair
    labelled with its PSNR (dB, peak 1) below it."""
    images, recon = images.detach().cpu().float(), recon.detach().cpu().float()
    values = psnr(images, recon.clamp(0, 1))
    b, _, h, w = images.shape
    per_row = max(1, min(per_row, b))
    pad = 2
    pairs = torch.stack([images, recon], 1).flatten(0, 1)
    img = grid(pairs, ncol=2 * per_row, pad=pad, scale=scale)
    fig = figure(max(4.0, img.width / 60), img.height / 60 + 0.9 + 0.25 * math.ceil(b / per_row))
    ax = fig.add_subplot()
    _show(ax, img)
    xs = _cell_centres(2 * per_row, w, pad, scale)
    for i, p in enumerate(values.tolist()):
        r, k = divmod(i, per_row)
        x = (xs[2 * k] + xs[2 * k + 1]) / 2
        y = scale * (pad + r * (h + pad) + h) - 0.5
        ax.text(x, y, "∞" if math.isinf(p) else f"{p:.1f} dB", ha="center", va="top", fontsize=6)
    ax.set_title((title + "\n" if title else "") + "each pair: original | reconstruction, PSNR below",
                 fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def save_reconstructions(model, images: torch.Tensor, path: str | Path, title: str = "") -> Path:
    """Originals beside their reconstructions (10 pairs per row), labelled with per-image PSNR."""
    if model.config.rank == 3:
        return save_volume_pairs(images, model.reconstruct(images), path, title=title)
    return save_pairs(images, model.reconstruct(images), path, scale=_scale(model), title=title)


def stage_canvases(model, images: torch.Tensor, max_stages: int = 20) -> torch.Tensor:
    """(B, 1 + S, C, H, W): the target, then the reconstruction after each of the first S stages."""
    s = min(max_stages, model.stages)
    codes = model.encode(images, stages=s)
    steps = [model.decode(codes, stages=i).cpu() for i in range(1, s + 1)]
    return torch.stack([images.cpu(), *steps], 1)


def stage_labels(options: int, stages: int) -> list[str]:
    """Column labels of the stage grid: "target", then "stage n · b bits" with b = ceil(n·log2 K)."""
    from ..compress.bitstream import bits_per_image

    return ["target"] + [f"{n}\n{bits_per_image(options, n)} bits" for n in range(1, stages + 1)]


def save_stages(model, images: torch.Tensor, path: str | Path, max_stages: int = 20, title: str = "") -> Path:
    """Paper Figure 6: one row per image, the target first, then each stage's reconstruction;
    the columns labelled with the stage and the code bits spent so far."""
    if model.config.rank == 3:
        return save_volume_stages(model, images, path, max_stages=max_stages, title=title)
    rows = stage_canvases(model, images, max_stages)
    b, cols, _, h, w = rows.shape
    scale, pad = _scale(model), 2
    img = grid(rows.flatten(0, 1), ncol=cols, pad=pad, scale=scale)
    fig = _stage_figure(img, cols, w, pad, scale, model.options, title, "")
    return save_figure(fig, path)


def save_curves(metrics: list[dict], path: str | Path, title: str = "", loss_name: str = "loss") -> Path:
    """Paper Figure 4: test (and train) loss on a log axis, code entropy (bits) on a twin axis.
    ``loss_name`` says what the likelihood's loss is (the modality's
    :meth:`~vqdraw.modalities.base.Modality.loss_name`, e.g. "MSE (normalised)"); the test loss is
    ``test_loss``, or ``test_mse`` in metrics files written before it had that name."""
    fig = figure(6.4, 4.0)
    ax = fig.add_subplot()
    train = [(m["step"], m["final"]) for m in metrics if "final" in m]
    test = [(m["step"], m.get("test_loss", m.get("test_mse"))) for m in metrics
            if "test_loss" in m or "test_mse" in m]
    ent = [(m["step"], m["entropy"] / math.log(2)) for m in metrics if "entropy" in m]  # logged in nats
    if train:
        ax.plot(*zip(*train), color="tab:blue", alpha=0.5, lw=1, label="train (final stage)")
    if test:
        ax.plot(*zip(*test), color="tab:blue", lw=2, marker="o", ms=3, label="test")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(loss_name)
    ax2 = ax.twinx()
    if ent:
        ax2.plot(*zip(*ent), color="tab:orange", lw=1, label="code entropy (bits, per mini-batch)")
    ax2.set_ylabel("code entropy (bits)", color="tab:orange")
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    if handles:  # below the axes, where it covers no data
        fig.legend(handles, labels, loc="lower center", ncol=min(3, len(handles)), fontsize=7, frameon=False)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return save_figure(fig, path)


def _scale(model) -> int:
    """Upscale small images so a grid is readable."""
    return 2 if model.config.data_shape[1] <= 32 else 1


# ------------------------------------------------------------------------------------- volumes
VOLUME_SAMPLES = 16
"""At most this many volume samples in a training run's samples.png (each decodes a whole grid)."""
VOLUME_STAGE_ROWS = 4
"""At most this many volumes in a stage-by-stage figure."""


def volume_views(volumes: torch.Tensor, threshold: float = 0.5, gap: int = 1) -> torch.Tensor:
    """Volumes (B, C, D, H, W) in [0, 1] -> pictures (B, 1, S, 3S + 2*gap) in [0, 1], S = max(D, H, W).

    Each picture holds three views of the occupied voxels (value > ``threshold``, any channel),
    looking along D, H and W in turn: a pixel is black where the ray meets nothing and otherwise
    as bright as the first occupied voxel is near (1.0 at the front face, 0.35 at the back), so
    shapes read as solids rather than flat silhouettes. Views are separated by grey columns.
    """
    occ = (volumes.detach().cpu().float() > threshold).any(dim=1)  # (B, D, H, W)
    b = occ.shape[0]
    side = max(occ.shape[1:])
    views = []
    for axis in (1, 2, 3):
        depth = occ.shape[axis]
        hit = occ.any(dim=axis)
        first = occ.float().argmax(dim=axis).float()  # index of the first occupied voxel on each ray
        shade = torch.where(hit, 1.0 - 0.65 * first / max(depth - 1, 1), torch.zeros(()))
        canvas = torch.zeros(b, side, side)
        canvas[:, : shade.shape[1], : shade.shape[2]] = shade
        views.append(canvas)
    sep = torch.full((b, side, gap), 0.5)
    return torch.cat([views[0], sep, views[1], sep, views[2]], dim=2).unsqueeze(1)


def volume_iou(volumes: torch.Tensor, recon: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Per-item intersection over union of the occupied voxels (B,); 1.0 where both are empty."""
    a = volumes.detach().cpu().flatten(1) > threshold
    b = recon.detach().cpu().flatten(1) > threshold
    inter = (a & b).sum(1).float()
    union = (a | b).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones(()))


def _volume_scale(views: torch.Tensor) -> int:
    return 2 if views.shape[-2] <= 32 else 1


def save_volume_samples(model, path: str | Path, n: int = VOLUME_SAMPLES, seed: int = 0,
                        stages: int | None = None, codes: torch.Tensor | None = None, progress=None) -> Path:
    """`n` volumes decoded from uniformly random codes (or from ``codes``, e.g. drawn from a
    learned prior), each as its three views (4 per row); made and written a few rows at a time
    (:func:`save_grid_png`), so memory does not grow with `n`."""
    from ..core.model import sample_chunks

    if codes is not None:
        n = codes.shape[0]
    side = max(model.config.data_shape[1:])
    tile = (1, side, 3 * side + 2)  # volume_views' picture (gap 1)
    chunks = sample_chunks(model, n, stages=stages, seed=seed, codes=codes, chunk=4 * 16)
    views = (volume_views(volumes) for volumes in chunks)
    return save_grid_png(views, n, path, tile_shape=tile, ncol=min(4, n) or None,
                         scale=_volume_scale(torch.empty(tile)), progress=progress)


def save_volume_pairs(volumes: torch.Tensor, recon: torch.Tensor, path: str | Path, *, per_row: int = 2,
                      title: str = "") -> Path:
    """Each volume's three views above its reconstruction's, `per_row` pairs a row, labelled with
    the intersection over union of their occupied voxels."""
    ious = volume_iou(volumes, recon).tolist()
    a, r = volume_views(volumes), volume_views(recon)
    b, _, h, w = a.shape
    per_row = max(1, min(per_row, b))
    pad = 6  # room for the IoU label under each pair
    scale = _volume_scale(a)
    img = grid(torch.stack([a, r], 1).flatten(0, 1), ncol=2 * per_row, pad=pad, scale=scale)
    rows = math.ceil(b / per_row)
    fig = figure(max(4.0, img.width / 60), img.height / 60 + 0.9 + 0.25 * rows)
    ax = fig.add_subplot()
    _show(ax, img)
    xs = _cell_centres(2 * per_row, w, pad, scale)
    for i, iou in enumerate(ious):
        row, k = divmod(i, per_row)
        y = scale * (pad + row * (h + pad) + h) - 0.5
        ax.text((xs[2 * k] + xs[2 * k + 1]) / 2, y, f"IoU {iou:.2f}", ha="center", va="top", fontsize=6)
    ax.set_title((title + "\n" if title else "") + "each pair: original | reconstruction, three views "
                 "(along D, H, W; brighter = nearer), IoU of occupied voxels below", fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def save_volume_stages(model, volumes: torch.Tensor, path: str | Path, max_stages: int = 20,
                       title: str = "") -> Path:
    """One row per volume (at most :data:`VOLUME_STAGE_ROWS`): the target's views, then the
    reconstruction's after each stage, columns labelled with the stage and the code bits so far."""
    volumes = volumes[:VOLUME_STAGE_ROWS]
    rows = stage_canvases(model, volumes, max_stages)  # (B, 1 + S, C, D, H, W)
    b, cols = rows.shape[:2]
    views = volume_views(rows.flatten(0, 1))
    h, w = views.shape[-2:]
    scale, pad = _volume_scale(views), 2
    img = grid(views, ncol=cols, pad=pad, scale=scale)
    fig = _stage_figure(img, cols, w, pad, scale, model.options, title, "; three views per volume")
    return save_figure(fig, path)


def _stage_figure(img, cols: int, w: int, pad: int, scale: int, options: int, title: str, note: str):
    """A stage grid as a figure, its columns labelled with the stage and the code bits so far."""
    fig = figure(max(4.0, img.width / 55), img.height / 55 + 1.1)
    ax = fig.add_subplot()
    _show(ax, img)
    ax.set_xticks(_cell_centres(cols, w, pad, scale))
    ax.set_xticklabels(stage_labels(options, cols - 1), fontsize=6)
    ax.tick_params(axis="x", length=0, top=True, labeltop=True, bottom=False, labelbottom=False)
    ax.set_title((title + "\n" if title else "") + "reconstruction after stage n (code bits so far)" + note,
                 fontsize=8)
    fig.tight_layout()
    return fig


def save_text_stages(rows: list[tuple[int, str]], original: str, path: str | Path, title: str = "",
                     width: int = 64) -> Path:
    """A text model's stage-by-stage picture: the original line, then the line decoded from the
    first s codes for each (s, line) of ``rows``, one character per cell, green where it matches
    the original and red where not (spaces as light dots, newlines and tabs as ⏎ and ⇥). Lines longer than
    ``width`` wrap onto the next row of the same stage."""
    def show(ch: str) -> str:
        return {"\n": "⏎", "\t": "⇥", "\r": "␍", " ": "·"}.get(ch, ch)

    width = max(1, min(width, len(original)))
    chunks = max(1, -(-len(original) // width))
    lines = [("original", original, None)] + [(f"{s} code{'s' if s != 1 else ''}", line, original) for s, line in rows]
    n_rows = len(lines) * chunks + len(lines) - 1
    fig = figure(1.4 + 0.12 * width, 0.6 + 0.22 * n_rows)
    ax = fig.add_axes((0, 0, 1, 0.9 if title else 1))
    ax.set_xlim(-11, width)
    ax.set_ylim(n_rows, -1)
    ax.axis("off")
    y = 0
    for label, line, ref in lines:
        ax.text(-10.5, y, label, family="monospace", fontsize=7, va="center", color="#333333")
        for i, ch in enumerate(line):
            row, col = divmod(i, width)
            colour = "black" if ref is None else ("#1a7f37" if i < len(ref) and ref[i] == ch else "#cf222e")
            if ch == " " and colour != "#cf222e":
                colour = "#bbbbbb"  # spaces as light dots, red where a character was lost
            ax.text(col, y + row, show(ch), family="monospace", fontsize=9, va="center", color=colour)
        y += chunks + 1
    if title:
        fig.suptitle(title, fontsize=8)
    return save_figure(fig, path)


def save_run_pictures(model, run_dir: Path, test_data, title: str = "") -> None:
    """A run folder's pictures of an image or volume model: 100 samples, 50 test items spread over
    the split beside their reconstructions, and 8 of them stage by stage."""

    def spread(k):
        return test_data[torch.linspace(0, len(test_data) - 1, min(k, len(test_data))).long()]

    save_samples(model, run_dir / "samples.png", n=100)
    save_reconstructions(model, spread(50), run_dir / "reconstructions.png", title=title)
    save_stages(model, spread(8), run_dir / "stages.png", title=title)
