"""`vqdraw eval`: rate–distortion of VQ-DRAW's code prefixes against JPEG and WebP."""

from __future__ import annotations

from ..pretrained import output_home
from .common import MAX_BATCH, MAX_BEAM, MAX_COUNT, add_fit_arg, add_model_arg, output_dir, positive_int


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        description="Compress test images with every code prefix of the model (through real .vqd files) "
        "and with JPEG and WebP (Pillow) at a sweep of qualities; measure sizes, MSE, PSNR and SSIM. "
        "Writes OUT_DIR/rd.json (CompressAI-style curves), OUT_DIR/curves/*.json (one per curve), "
        "OUT_DIR/rd.png (PSNR against bits per image) and OUT_DIR/compare.png. "
        "Definitions: docs/compression.md.")
    add_model_arg(p, rest="images")
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help="image files or folders (default: test images of --dataset or of the model's dataset)")
    p.add_argument("--dataset", default=None, help="take test images from this dataset")
    p.add_argument("--data-dir", default=None, help="where datasets live")
    p.add_argument("--count", type=positive_int(max=MAX_COUNT), default=500,
                   help="how many images to use (test images: a class-balanced, seeded subset)")
    add_fit_arg(p)
    p.add_argument("--beam", type=positive_int(max=MAX_BEAM), default=1, help="beam width for encoding (1 = greedy)")
    p.add_argument("--batch", type=positive_int(max=MAX_BATCH), default=256, help="images encoded and decoded at a time")
    p.add_argument("-o", "--output", type=output_dir, default=None, metavar="OUT_DIR", help="default: MODEL/eval")
    p.add_argument("--prior", action="store_true",
                   help="add the curve of entropy-coded .vqd files (the learned prior beside the model: `vqdraw prior`)")
    p.set_defaults(func=run)


def _source(args) -> str:
    from ..baselines import run_dataset

    if args.images:
        return "files: " + ", ".join(args.images)
    if args.dataset:
        return f"{args.dataset} test split"
    name = run_dataset(args.model)
    return f"{name} test split" if name else ""


def run(args) -> int:
    from pathlib import Path

    from ..evaluate import ratedistortion as rd
    from ..evaluate import rdplots
    from ..errors import InputError
    from ..modalities import check_inputs, modality_for
    from .common import load_inputs, load_model, policy_of

    model = load_model(args)
    check_inputs(model.config, args.images, args.dataset)
    modality = modality_for(model.config)
    if not modality.supports_eval:
        raise InputError(f"vqdraw eval compares images with image codecs; for {modality.name} models use "
                         "vqdraw reconstruct")
    images = load_inputs(args, model).cpu()
    out = Path(args.output) if args.output else output_home(args.model) / "eval"
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    prior = None
    if args.prior:
        from ..prior import load_prior

        prior = load_prior(args.model, model)
    report, recon = rd.evaluate(model, images, batch_size=args.batch, policy=policy_of(args), source=_source(args),
                                prior=prior)
    report["model"]["path"] = str(args.model)
    created = not out.exists()
    try:
        path = rd.write_report(report, out)
        rdplots.save_rd_plot(report, out / "rd.png")
        rdplots.save_compare(report, images, recon, out / "compare.png")
    except OSError as exc:
        if created:  # a folder this command made holds no half of a report
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        raise InputError(f"{out}: cannot write the results ({exc.strerror or exc})") from None

    curves = {c["name"]: c["results"] for c in report["curves"]}
    vq = curves["VQ-DRAW"]
    print(f"{path}: {report['count']} images {report['image_shape']}, model K={model.options} N={model.stages}")
    print(f"  VQ-DRAW {vq['stages'][-1]} stages: {vq['bits_per_image'][-1]} bits payload, "
          f"{curves['VQ-DRAW (.vqd file, one image)']['bits_per_image'][-1]} bits as a one-image file, "
          f"{vq['bits_per_image_file_all_images'][-1]:.2f} bits per image in one file; "
          f"PSNR {_fmt(vq['psnr-rgb'][-1], 'inf')} dB (mean of per-image PSNR; "
          f"{_fmt(vq['psnr-of-mean-mse'][-1], 'inf')} dB of the mean MSE), SSIM {_fmt(vq['ssim'][-1])}; "
          f"{1000 * vq['encoding_time'][-1]:.2f} ms to encode, {1000 * vq['decoding_time'][-1]:.2f} ms to "
          "decode per image")
    coded = curves.get("VQ-DRAW (entropy-coded .vqd file, all images)")
    if coded is not None:
        print(f"  entropy-coded with the prior, one file of all images: {coded['bits_per_image'][-1]:.2f} bits per "
              f"image ({coded['payload_bits_per_image'][-1]:.2f} payload; prior cross-entropy "
              f"{coded['cross_entropy_bits'][-1]:.2f}) against {vq['bits_per_image'][-1]} at fixed length")
    for name in ("JPEG", "JPEG (no headers)", "WebP", "WebP (no headers)", "WebP lossless",
                 "WebP lossless (no headers)"):
        if name in curves:
            r = curves[name]
            i = min(range(len(r["bits_per_image"])), key=r["bits_per_image"].__getitem__)
            print(f"  {name} smallest: quality {r['quality'][i]}, {r['bits_per_image'][i]:.1f} bits per image, "
                  f"PSNR {_fmt(r['psnr-rgb'][i], 'inf')} dB")
    print(f"  {out / 'rd.png'}, {out / 'compare.png'}")
    return 0


def _fmt(value, none: str = "n/a") -> str:
    return none if value is None else f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}"
