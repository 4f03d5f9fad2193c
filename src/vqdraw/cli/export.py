"""`vqdraw export`: a model -> decoder.onnx, encoder.onnx and model.json in a folder (docs/export.md)."""

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
    p.set_defaults(func=run, device="cpu")


def run(args) -> int:
    from ..compress.export import check_exportable, export
    from .common import load_model

    model = load_model(args)  # on the CPU: the graphs are device-free
    check_exportable(model)
    print(f"vqdraw export: {args.model} -> {args.output} (this takes a few seconds per graph)")
    result = export(model, args.output)
    d = result.description
    for path in result.files:
        print(f"  {path}  ({path.stat().st_size:,} bytes)")
    print(f"{d['modality']} model, {d['stages']} stages of {d['options']} options, data {tuple(d['data_shape'])}, "
          f"fingerprint {d['fingerprint']}, opset {d['opset']}")
    return 0
