"""`vqdraw stages`: the paper's Figure 6, the reconstruction after each stage."""

from __future__ import annotations

from .common import (MAX_STAGES, add_input_args, add_model_arg, default_output, load_inputs, load_model,
                     model_title_name, output_file, output_path, positive_int)
from .reconstruct import _dataset


def register(sub) -> None:
    p = sub.add_parser("stages",
                       description="One row per image: the target, then the reconstruction after "
                       "stage 1, 2, … (at most --max-stages). A text model: the first sequence (of the "
                       "text files given, else of the test set) decoded from 1, 2, 5, 10, … codes, as "
                       "lines (MODEL/stages-cli.txt) and a picture, characters green where right.")
    add_model_arg(p, rest="images")
    add_input_args(p, count=8)
    p.add_argument("--max-stages", type=positive_int(max=MAX_STAGES), default=20, help="show at most this many stages")
    p.add_argument("-o", "--output", type=output_file, default=None, help="PNG to write (default: MODEL/stages-cli.png, or stages-cli-2.png, … when "
                   "an earlier one is there)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..evaluate import plots
    from ..modalities import modality_for

    model = load_model(args)
    modality = modality_for(model.config)
    data = load_inputs(args, model)
    out = output_path(args.output, None if args.output else default_output(args.model, "stages-cli.png"))
    print(modality.write_stages(model, data, out, max_stages=args.max_stages,
                                title=plots.describe_model(model.config, _dataset(args), model_title_name(args.model))))
    return 0
