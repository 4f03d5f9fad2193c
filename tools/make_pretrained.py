"""Package a trained MNIST run as the shipped model ``pretrained:mnist`` and measure its model card's figures.

    python tools/make_pretrained.py RUN_FOLDER     # writes src/vqdraw/pretrained/mnist/, prints JSON

Copies the run's newest checkpoint (config.json, model.safetensors: the averaged weights when the run
used --ema) and a train.json holding only what a user of the model needs (the dataset and the
training settings), then measures on the 500 test digits of the embedded MNIST set: normalised MSE,
PSNR of the mean MSE, mean per-image PSNR, greedy and beam 8. Run once; not needed at install time.
"""

import json
import shutil
import sys
from pathlib import Path

import torch

from vqdraw import VQDraw
from vqdraw.data import load_dataset
from vqdraw.evaluate.metrics.distortion import psnr_from_mse
from vqdraw.runs import read_train_json, resolve_model_dir

run = Path(sys.argv[1])
out = Path(__file__).resolve().parents[1] / "src/vqdraw/pretrained/mnist"
ckpt = resolve_model_dir(run)
out.mkdir(parents=True, exist_ok=True)
for name in ("config.json", "model.safetensors"):
    shutil.copyfile(ckpt / name, out / name)
train = read_train_json(run)
(out / "train.json").write_text(json.dumps({"model": train["model"], "train": train["train"]}, indent=2) + "\n")

torch.set_num_threads(1)
model = VQDraw.from_pretrained("mnist")
test = load_dataset("mnist-embedded", "test")
x = test.batch(range(len(test)))
report = {"checkpoint": ckpt.name, "parameters": sum(p.numel() for p in model.parameters()),
          "test_digits": len(x), "bytes": (out / "model.safetensors").stat().st_size}
rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
rows = [r for r in rows if r.get("step", 0) <= int(ckpt.name.removeprefix("ckpt-"))]
report["steps"] = rows[-1]["step"] if rows else None
report["train_seconds"] = rows[-1].get("time") if rows else None
for beam in (1, 8):
    recon = model.decode(model.encode(x, beam=beam))
    per_image = ((recon - x) ** 2).flatten(1).mean(1)
    mse = float(per_image.mean())
    report[f"beam{beam}"] = {
        "mse": round(mse, 6),
        "mse_normalised": round(mse / 0.3081 ** 2, 5),
        "psnr_of_mean_mse": round(psnr_from_mse(mse), 2),
        "mean_per_image_psnr": round(float(torch.stack([torch.tensor(psnr_from_mse(float(v))) for v in per_image]).mean()), 2),
    }
print(json.dumps(report, indent=2))
