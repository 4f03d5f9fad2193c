"""Images (C, H, W): PNG/JPEG files and image datasets in, PNG pictures out."""

from __future__ import annotations

from .base import Modality, decode_to_folder, is_entropy_coded, plural, progress_bar, write_codes_file


class ImageModality(Modality):
    name = "image"
    noun = "image"
    give = "PNG/JPEG images (files, a folder:DIR, or an image dataset such as mnist)"
    run_outputs = ("samples.png", "reconstructions.png", "stages.png")
    supports_eval = True
    element = "pixel"
    headline = ("test_psnr", "psnr", ".2f")

    def test_metrics(self, model, data, recon):
        """Pixel MSE (pixels in [0, 1]) and the PSNR of that mean MSE (peak 1)."""
        from ..evaluate.metrics import mse, psnr_from_mse

        err = mse(data, recon).mean().item()
        return {"test_mse_pixels": err, "test_psnr": psnr_from_mse(err)}

    def summary(self, metrics, config=None):
        out = super().summary(metrics, config)
        if "test_psnr" in metrics:
            out += f", {metrics['test_mse_pixels']:.5f} (pixels in [0, 1]), PSNR {metrics['test_psnr']:.2f} dB"
        return out

    @property
    def file_suffixes(self):  # noqa: D401 - the reader's list
        from ..data.images import IMAGE_SUFFIXES

        return tuple(IMAGE_SUFFIXES)



    # -------------------------------------------------------------- inputs
    def load_files(self, model, files, *, count=None, fit=False):
        from ..data.images import expand_image_paths, load_images

        paths = expand_image_paths(list(files))
        if count:
            paths = paths[:count]
        images = load_images(paths, model.config.data_shape, fit=fit)
        warn_polarity(images, model, names=paths)
        return images.to(model.device)

    def load_test_items(self, model, inputs):
        """--count test images, class-balanced (seeded random without labels)."""
        from ..data import balanced_subset, load_dataset
        from ..errors import InputError

        shape = tuple(model.config.data_shape)
        if inputs.dataset is None:
            raise InputError("no images given and the model folder does not say its dataset; pass --dataset")
        test = load_dataset(inputs.dataset, "test", inputs.data_dir)
        if test.data_shape != shape:
            raise InputError(f"dataset {inputs.dataset} has images of shape {test.data_shape}, the model takes "
                             f"{shape}")
        return test.batch(balanced_subset(test.labels, inputs.count, size=len(test)), model.device)

    # -------------------------------------------------------------- outputs
    def write_pairs(self, model, data, recon, out, *, stages, title=""):
        from ..evaluate import plots
        from ..compress.bitstream import bits_per_image
        from ..evaluate.metrics import mse, psnr, psnr_from_mse

        bits = bits_per_image(model.options, stages)
        plots.save_pairs(data, recon, out, scale=plots._scale(model), title=f"{title}; {stages} stages, {bits} bits")
        errors = mse(data, recon)
        return (f"{out}: {len(data)} images, {bits} bits each, MSE {errors.mean().item():.5f}, "
                f"PSNR {psnr(data, recon).mean().item():.2f} dB (mean of per-image PSNR; "
                f"{psnr_from_mse(errors.mean().item()):.2f} dB of the mean MSE)")

    def write_samples(self, model, out, *, count, stages, seed, codes=None, progress=True):
        from ..evaluate import plots
        from .base import SAMPLE_CHUNK, progress_bar, sample_chunks

        count = count if codes is None else int(codes.shape[0])
        chunks = sample_chunks(model, count, stages=stages, seed=seed, codes=codes, chunk=grid_chunk(count))
        bar = progress_bar(count, chunk=SAMPLE_CHUNK, desc="sample", unit=self.noun, enabled=progress)
        try:
            plots.save_grid_png(chunks, count, out, tile_shape=tuple(model.config.data_shape),
                                scale=plots._scale(model), progress=bar)
        finally:
            bar.close()
        return str(out)

    def write_stages(self, model, data, out, *, max_stages, title=""):
        from ..evaluate import plots

        plots.save_stages(model, data, out, max_stages=max_stages, title=title)
        return str(out)

    def encode(self, model, files, out, options):
        import torch

        from ..compress.bitstream import bits_per_image, header_size
        from ..compress.codec import compress_codes, encode_images
        from ..data.images import expand_image_paths, load_images

        paths = expand_image_paths(list(files))
        shape = tuple(model.config.data_shape)
        batch = options.batch
        if not options.fit:
            for path in paths:
                check_channels(path, shape[0])
        codes = []
        bar = progress_bar(len(paths), chunk=batch, desc="encode", unit=self.noun, enabled=options.progress)
        try:
            for i in range(0, len(paths), batch):
                images = load_images(paths[i: i + batch], shape, fit=options.fit)
                if not codes:
                    warn_polarity(images, model, names=paths[i: i + batch])
                codes.append(encode_images(model, images.to(model.device), options.stages, policy=options.policy))
                bar.update(len(images))
        finally:
            bar.close()
        codes = torch.cat(codes)
        data = write_codes_file(out, lambda prior: compress_codes(model, codes, prior=prior), options.prior)
        n = options.stages or model.stages
        count = len(paths)
        bits = bits_per_image(model.options, n)
        per_pixel = f", {8 * len(data) / count / (shape[1] * shape[2]):.4f} bits per pixel"
        if is_entropy_coded(data):
            head = header_size(shape, self.name, coded=True)
            return (f"{out}: {plural(count, 'image')}, {n} stages of K={model.options}, entropy-coded with the "
                    f"prior: {8 * (len(data) - head) / count:.2f} bits per image payload (fixed length: {bits}), "
                    f"{head} header bytes, {len(data)} bytes in all = {len(data) / count:.2f} bytes "
                    f"({8 * len(data) / count:.1f} bits) per image{per_pixel}")
        return (f"{out}: {plural(count, 'image')}, {n} stages of K={model.options}: "
                f"{bits} bits per image payload, {header_size()} header bytes, {len(data)} bytes in all "
                f"= {len(data) / count:.2f} bytes ({8 * len(data) / count:.1f} bits) per image{per_pixel}")

    def decode(self, model, data, out, options, *, source):
        from ..data.images import save_image

        vqd = decode_to_folder(self, model, data, out, options, suffix=".png", save=save_image)
        c, h, w = vqd.data_shape
        n = options.stages or vqd.stages
        return (f"{out}: {vqd.count} PNG image{'s' if vqd.count != 1 else ''} ({w}x{h}, {c} channel"
                f"{'s' if c != 1 else ''}) decoded from {source} ({n} of {vqd.stages} stages, K={vqd.K})")

    # -------------------------------------------------------------- training
    def write_run_outputs(self, model, run_dir, test_data, title=""):
        from ..evaluate.plots import save_run_pictures

        save_run_pictures(model, run_dir, test_data, title)


def grid_chunk(count: int, ncol: int | None = None) -> int:
    """Samples made at a time for a grid picture of ``count``: whole rows of it, about
    :data:`~vqdraw.modalities.base.SAMPLE_CHUNK` (at least one row)."""
    import math

    from .base import SAMPLE_CHUNK

    ncol = ncol or max(1, math.ceil(math.sqrt(count)))
    return ncol * max(1, SAMPLE_CHUNK // ncol)


def warn_polarity(images, model, names=None) -> None:
    """Warn (:class:`vqdraw.errors.InputWarning`) when the images (files `names`) look far darker
    or lighter than the model's training data."""
    import warnings

    from ..data.images import polarity_warning
    from ..errors import InputWarning

    message = polarity_warning(images, model.config.mean, names=names)
    if message:
        warnings.warn(message, InputWarning, stacklevel=2)


def check_channels(path, channels: int) -> None:
    """Refuse an image file whose channels differ from the model's (grey vs colour) before loading it."""
    from PIL import Image, UnidentifiedImageError

    from ..errors import InputError

    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode == "P":  # a palette: grey if every palette entry is grey
                r, g, b = im.convert("RGB").split()
                mode = "L" if r.tobytes() == g.tobytes() == b.tobytes() else "RGB"
    except Image.DecompressionBombError as exc:
        raise InputError(f"{path}: image too large ({exc})") from None
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"{path}: not a readable image ({exc.__class__.__name__})") from None
    grey_modes = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
    has = 1 if mode in grey_modes else 3
    if has != channels:
        kind = {1: "greyscale (1 channel)", 3: "colour (3 channels)"}
        raise InputError(f"{path}: image is {kind[has]} but the model takes {kind.get(channels, f'{channels} channels')}"
                         "; pass --fit to convert it")
