"""Volumes (C, D, H, W): ``.npy`` / ``.npz`` / ``.binvox`` occupancy grids and ``voxels:PATH`` in,
``.npy`` grids and three-view pictures out (see :mod:`vqdraw.data.voxels`)."""

from __future__ import annotations

from .base import Modality, decode_to_folder, plural, write_codes_file


class VolumeModality(Modality):
    name = "volume"
    noun = "volume"
    give = "occupancy grids (.npy or .binvox files, or voxels:DIR)"
    run_outputs = ("samples.png", "reconstructions.png", "stages.png")
    element = "voxel"
    headline = ("test_iou", "iou", ".3f")

    def test_metrics(self, model, data, recon):
        """Mean intersection over union of the occupied voxels (threshold 0.5)."""
        from ..evaluate.plots import volume_iou

        return {"test_iou": volume_iou(data, recon).mean().item()}

    def summary(self, metrics, config=None):
        out = super().summary(metrics, config)
        return out + (f", mean IoU {metrics['test_iou']:.3f}" if "test_iou" in metrics else "")

    @property
    def file_suffixes(self):
        from ..data.voxels import VOXEL_SUFFIXES

        return tuple(VOXEL_SUFFIXES)


    def holds_path(self, path) -> bool:
        """A voxel file, or a folder with voxel files and no images."""
        from ..data.images import IMAGE_SUFFIXES
        from .base import _suffixes

        suffixes = _suffixes(path)
        return bool(suffixes & set(self.file_suffixes)) and not suffixes & set(IMAGE_SUFFIXES)

    # -------------------------------------------------------------- inputs
    def load_files(self, model, files, *, count=None, fit=False):
        """Grids from voxel files/folders as float (B, 1, D, H, W) in {0, 1} on the model's device."""
        import numpy as np
        import torch

        from ..data.voxels import load_voxel_files

        grids = load_voxel_files(list(files), size=tuple(model.config.data_shape[1:]))
        if count:
            grids = grids[:count]
        return torch.from_numpy(np.array(grids)).float().unsqueeze(1).to(model.device)

    def load_test_items(self, model, inputs):
        """--count test grids of the dataset, a seeded random subset; whole multiples of the
        model's size are reduced, as in training."""
        from ..data import balanced_subset

        test = self.test_set(model, inputs)
        return test.batch(balanced_subset(test.labels, inputs.count, size=len(test)), model.device)

    # -------------------------------------------------------------- outputs
    def write_pairs(self, model, data, recon, out, *, stages, title=""):
        from ..evaluate import plots
        from ..compress.bitstream import bits_per_image

        bits = bits_per_image(model.options, stages)
        plots.save_volume_pairs(data, recon, out, title=f"{title}; {stages} stages, {bits} bits")
        return f"{out}: {len(data)} volumes, {bits} bits each, {bernoulli_report(data, recon)}"

    def write_samples(self, model, out, *, count, stages, seed, codes=None, progress=True):
        from ..evaluate import plots
        from .base import SAMPLE_CHUNK, progress_bar

        total = count if codes is None else int(codes.shape[0])
        bar = progress_bar(total, chunk=SAMPLE_CHUNK, desc="sample", unit=self.noun, enabled=progress)
        try:
            plots.save_volume_samples(model, out, n=count, seed=seed, stages=stages, codes=codes, progress=bar)
        finally:
            bar.close()
        return str(out)

    def write_stages(self, model, data, out, *, max_stages, title=""):
        from ..evaluate import plots

        plots.save_stages(model, data, out, max_stages=max_stages, title=title)
        return str(out)

    def encode(self, model, files, out, options):
        """The grids of the files -> one .vqd file: the grids are held as they were read (bool; a
        bool .npy memory-mapped) and turned into the model's data ``batch`` at a time."""
        import numpy as np
        import torch

        from ..compress.bitstream import bits_per_image, header_size
        from ..compress.codec import compress_codes, encode_images
        from ..data.voxels import load_voxel_files
        from .base import is_entropy_coded, progress_bar

        grids = load_voxel_files(list(files), size=tuple(model.config.data_shape[1:]))
        count = len(grids)
        batch = options.batch
        codes = []
        bar = progress_bar(count, chunk=batch, desc="encode", unit=self.noun, enabled=options.progress)
        try:
            for i in range(0, count, batch):
                part = torch.from_numpy(np.array(grids[i: i + batch])).float().unsqueeze(1).to(model.device)
                codes.append(encode_images(model, part, options.stages, policy=options.policy))
                bar.update(len(part))
        finally:
            bar.close()
        codes = torch.cat(codes)
        data = write_codes_file(out, lambda prior: compress_codes(model, codes, prior=prior), options.prior)
        n = options.stages or model.stages
        shape = tuple(model.config.data_shape)
        coded = is_entropy_coded(data)
        head = header_size(shape, self.name, coded=coded)
        payload = (f"{8 * (len(data) - head) / max(count, 1):.2f} bits per volume payload, entropy-coded "
                   "with the prior" if coded
                   else f"{bits_per_image(model.options, n)} bits per volume payload")
        voxels = shape[1] * shape[2] * shape[3]
        per_item = 8 * len(data) / max(count, 1)
        return (f"{out}: {plural(count, 'volume')} ({'x'.join(map(str, shape[1:]))}), {n} stages of "
                f"K={model.options}: {payload}, {head} header bytes, {len(data)} bytes in all = "
                f"{per_item:.1f} bits per volume, {per_item / voxels:.5f} bits per voxel")

    def decode(self, model, data, out, options, *, source):
        """One ``.npy`` occupancy grid per volume (probability > 0.5)."""
        vqd = decode_to_folder(self, model, data, out, options, suffix=".npy", save=save_grids_npy)
        n = options.stages or vqd.stages
        return (f"{out}: {vqd.count} .npy grid{'s' if vqd.count != 1 else ''} "
                f"({'x'.join(map(str, vqd.data_shape[1:]))}, bool) decoded from {source} "
                f"({n} of {vqd.stages} stages, K={vqd.K})")

    # -------------------------------------------------------------- training
    def write_run_outputs(self, model, run_dir, test_data, title=""):
        from ..evaluate.plots import save_run_pictures

        save_run_pictures(model, run_dir, test_data, title)


def save_grids_npy(volume, path) -> None:
    """One decoded volume (C, D, H, W) in [0, 1] as a bool occupancy grid (D, H, W) (C = 1) or
    (C, D, H, W), occupied where the probability is above 0.5."""
    import io

    import numpy as np

    from ..io import atomic_write_bytes

    grid = (volume.detach().cpu() > 0.5).numpy()
    if grid.shape[0] == 1:
        grid = grid[0]
    buf = io.BytesIO()
    np.save(buf, grid.astype(bool), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def bernoulli_report(volumes, recon) -> str:
    """"BCE x nats/voxel = y bits/voxel, IoU z" of reconstructions (probabilities) against grids."""
    import math

    from ..evaluate.plots import volume_iou

    p = recon.detach().cpu().double().clamp(1e-7, 1 - 1e-7)
    x = volumes.detach().cpu().double()
    bce = -(x * p.log() + (1 - x) * (1 - p).log()).mean().item()
    iou = volume_iou(volumes, recon).mean().item()
    return (f"BCE {bce:.5f} nats/voxel = {bce / math.log(2):.5f} bits/voxel, "
            f"mean IoU {iou:.3f} (threshold 0.5)")
