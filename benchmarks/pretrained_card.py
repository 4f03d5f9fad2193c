"""The test figures of a shipped model's card, as JSON (one core; no GPU needed).

    python benchmarks/pretrained_card.py pretrained:fashion --data-dir DIR [--beam-count 2000]
    python benchmarks/pretrained_card.py pretrained:text
    python benchmarks/pretrained_card.py RUN_FOLDER --dataset fashion-mnist      # before packaging

Images: greedy PSNR (of the mean MSE, and the mean of per-image PSNR) on the whole test split of
the model's dataset, beam 8 on its first ``--beam-count`` images, and greedy on the same subset for
comparison. Text: on the test split of the model's dataset (the last 10% of the embedded prose,
never seen in training), by code prefix: character accuracy, bits of code per character, the
cross-entropy of the text given the reconstruction and their sum (a lossless code's length), beside
gzip -9, bzip2 -9 and xz -9 of the same characters.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def image_figures(model, test, beam_count: int, count: int | None = None, batch: int = 500) -> dict:
    from vqdraw import Beam
    from vqdraw.evaluate.metrics.distortion import psnr_from_mse

    def measure(indices, beam):
        per_image = []
        for i in range(0, len(indices), batch):
            x = test.batch(indices[i: i + batch])
            recon = model.decode(model.encode(x, policy=Beam(beam)))
            per_image.append(((recon - x) ** 2).flatten(1).mean(1))
        per_image = torch.cat(per_image)
        mse = float(per_image.mean())
        return {"images": len(per_image), "mse": round(mse, 6),
                "psnr_of_mean_mse": round(psnr_from_mse(mse), 2),
                "mean_per_image_psnr": round(float((-10 * torch.log10(per_image.clamp(min=1e-12))).mean()), 2)}

    everything = list(range(min(count or len(test), len(test))))
    subset = everything[:beam_count]
    t0 = time.perf_counter()
    out = {"greedy_all": measure(everything, 1)}
    out["greedy_seconds"] = round(time.perf_counter() - t0, 1)
    out["greedy_subset"] = measure(subset, 1)
    out["beam8_subset"] = measure(subset, 8)
    return out


def text_figures(model, test) -> dict:
    from vqdraw.compress.text import lossless_bits_per_char, sequences_to_text, stage_report

    data = test.batch(range(len(test)))
    rows = stage_report(model, data, stages=sorted({1, 2, 5, model.stages // 2, model.stages}))
    text = "".join(sequences_to_text(data))
    first = data[:500]
    recon = model.decode(model.encode(first))
    accuracy = float((torch.round(recon * 255) == torch.round(first * 255)).float().mean())
    return {"sequences": len(data), "characters": len(text), "by_stage": rows,
            "first_500_accuracy": round(accuracy, 4),
            "lossless": {k: round(v, 3) for k, v in lossless_bits_per_char(text).items()}}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--dataset", default=None, help="default: the model's")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--beam-count", type=int, default=2000)
    p.add_argument("--count", type=int, default=None, help="images: use only the first COUNT test images")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from vqdraw import VQDraw
    from vqdraw.core.modality import modality_of
    from vqdraw.data import load_dataset
    from vqdraw.runs import read_train_json
    from vqdraw.pretrained import resolve

    model = VQDraw.load(args.model).eval()
    dataset = args.dataset or read_train_json(resolve(args.model))["train"]["dataset"]
    test = load_dataset(dataset, "test", args.data_dir, size=tuple(model.config.data_shape[1:]))
    kind = modality_of(model.config)
    report = {"model": args.model, "dataset": dataset, "fingerprint": model.fingerprint().hex(),
              "parameters": sum(q.numel() for q in model.parameters())}
    with torch.no_grad():
        if kind == "image":
            report.update(image_figures(model, test, args.beam_count, args.count))
        elif kind == "text":
            report.update(text_figures(model, test))
        else:
            raise SystemExit(f"no card figures for {kind} models yet")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
