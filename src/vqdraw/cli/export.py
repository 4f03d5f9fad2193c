"""`vqdraw export`: a model -> decoder.onnx, encoder.onnx and model.json in a folder (docs/export.md);
``--web``: and a static page that draws, encodes, decodes and samples in the browser."""

from __future__ import annotations

from .common import add_model_arg, output_dir


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        description="Write the model as two ONNX graphs into OUT_DIR: decoder.onnx (codes (B, N) int64 -> "
        "data (B, C, ...) float32 in [0, 1], as VQDraw.decode returns them) and encoder.onnx (data -> "
        "the greedy codes), any batch size, plus model.json describing them (data shape, K, N, modality, "
        "likelihood, fingerprint, normalisation, opset). Runs anywhere ONNX Runtime does; needs the "
        "[export] extra (onnx; onnxruntime to run the graphs). Files of the same names in OUT_DIR are "
        "replaced.")
    add_model_arg(p, device=False)
    p.add_argument("-o", "--output", type=output_dir, required=True, metavar="OUT_DIR",
                   help="folder for decoder.onnx, encoder.onnx and model.json")
    p.add_argument("--web", action="store_true",
                   help="also write a static web page (index.html, app.js, onnxruntime-web) that encodes a "
                   "drawing, shows the code (hex and per stage) and the stages, changes one stage's choice, "
                   "samples, and opens .vqd files (versions 1-2); image models only, works offline. "
                   "Serve OUT_DIR over HTTP, e.g. python -m http.server -d OUT_DIR")
    p.add_argument("--ort-web", metavar="DIR", default=None,
                   help="onnxruntime-web's npm package folder (or its dist folder) to copy into OUT_DIR "
                   "(default: node_modules/onnxruntime-web; `npm install onnxruntime-web`)")
    p.set_defaults(func=run, device="cpu")


def run(args) -> int:
    from ..compress.export import check_exportable, check_web, export, find_ort_web, write_web_page
    from ..errors import InputError
    from .common import load_model

    if args.ort_web is not None and not args.web:
        raise InputError("--ort-web is for the web page: add --web")
    ort_web = find_ort_web(args.ort_web) if args.web else None  # refused before the model is loaded
    model = load_model(args)  # on the CPU: the graphs are device-free
    check_exportable(model)
    if args.web:
        check_web(model)
    print(f"vqdraw export: {args.model} -> {args.output} (this takes a few seconds per graph)")
    result = export(model, args.output)
    files = result.files + (write_web_page(args.output, ort_web) if args.web else [])
    d = result.description
    for path in files:
        print(f"  {path}  ({path.stat().st_size:,} bytes)")
    print(f"{d['modality']} model, {d['stages']} stages of {d['options']} options, data {tuple(d['data_shape'])}, "
          f"fingerprint {d['fingerprint']}, opset {d['opset']}")
    if args.web:
        print(f"the page: python -m http.server -d {args.output}, then open http://localhost:8000/")
    return 0
