"""Images (C, H, W): PNG/JPEG files and image datasets in, PNG pictures out."""

from __future__ import annotations

import sys

from .base import Modality, plural, write_files_atomically, write_vqd_file


class ImageModality(Modality):
    name = "image"
    noun = "image"
    run_outputs = ("samples.png", "reconstructions.png", "stages.png")
    supports_eval = True

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
        warn_polarity(images, model)
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

    def write_samples(self, model, out, *, count, stages, seed, codes=None):
        import torch

        from ..evaluate import plots

        g = torch.Generator().manual_seed(seed)
        images = model.sample(count, stages=stages, generator=g) if codes is None else model.decode(codes)
        plots.save_png(plots.grid(images, scale=plots._scale(model)), out)
        return str(out)

    def write_stages(self, model, data, out, *, max_stages, title=""):
        from ..evaluate import plots

        plots.save_stages(model, data, out, max_stages=max_stages, title=title)
        return str(out)

    def encode(self, model, files, out, *, stages, beam, batch, fit=False, prior=None):
        import torch
        from tqdm import tqdm

        from ..compress.bitstream import bits_per_image, header_size
        from ..compress.codec import compress_codes, encode_images
        from ..data.images import expand_image_paths, load_images

        paths = expand_image_paths(list(files))
        shape = tuple(model.config.data_shape)
        if not fit:
            for path in paths:
                check_channels(path, shape[0])
        batches = [paths[i: i + batch] for i in range(0, len(paths), batch)]
        codes = []
        with tqdm(batches, desc="encoding", unit="batch", disable=None if len(batches) > 1 else True,
                  leave=False) as bar:
            for chunk in bar:
                images = load_images(chunk, shape, fit=fit)
                if not codes:
                    warn_polarity(images, model)
                codes.append(encode_images(model, images.to(model.device), stages=stages, beam=beam))
        data = write_vqd_file(out, compress_codes(model, torch.cat(codes), prior=prior))
        n = stages or model.stages
        count = len(paths)
        bits = bits_per_image(model.options, n)
        if prior is not None:
            head = header_size(shape, self.name, coded=True)
            return (f"{out}: {plural(count, 'image')}, {n} stages of K={model.options}, entropy-coded with the "
                    f"prior: {8 * (len(data) - head) / count:.2f} bits per image payload (fixed length: {bits}), "
                    f"{head} header bytes, {len(data)} bytes in all = {len(data) / count:.2f} bytes "
                    f"({8 * len(data) / count:.1f} bits) per image")
        return (f"{out}: {plural(count, 'image')}, {n} stages of K={model.options}: "
                f"{bits} bits per image payload, {header_size()} header bytes, {len(data)} bytes in all "
                f"= {len(data) / count:.2f} bytes ({8 * len(data) / count:.1f} bits) per image")

    def decode(self, model, data, out, *, stages, batch, source, prior=None):
        from ..compress.codec import decompress
        from ..data.images import save_image

        images, vqd = decompress(model, data, stages=stages, batch_size=batch, prior=prior)
        width = max(6, len(str(max(vqd.count - 1, 0))))
        names = [f"{i:0{width}d}.png" for i in range(vqd.count)]
        write_files_atomically(images, names, out, save_image)
        c, h, w = vqd.data_shape
        n = stages or vqd.stages
        return (f"{out}: {vqd.count} PNG image{'s' if vqd.count != 1 else ''} ({w}x{h}, {c} channel"
                f"{'s' if c != 1 else ''}) decoded from {source} ({n} of {vqd.stages} stages, K={vqd.K})")

    # -------------------------------------------------------------- training
    def write_run_outputs(self, model, run_dir, test_data, title=""):
        import torch

        from ..evaluate import plots

        def spread(k):
            return test_data[torch.linspace(0, len(test_data) - 1, min(k, len(test_data))).long()]

        plots.save_samples(model, run_dir / "samples.png", n=100)
        plots.save_reconstructions(model, spread(50), run_dir / "reconstructions.png", title=title)
        plots.save_stages(model, spread(8), run_dir / "stages.png", title=title)


def warn_polarity(images, model) -> None:
    """Print to stderr when the images look far darker or lighter than the model's training data."""
    from ..data.images import polarity_warning

    message = polarity_warning(images, model.config.mean)
    if message:
        print(f"warning: {message}", file=sys.stderr)


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
