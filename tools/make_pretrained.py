"""Package a trained run as a shipped model ``pretrained:NAME``.

    python tools/make_pretrained.py RUN_FOLDER [NAME]   # NAME: mnist (default), fashion, text, ...

Copies the run's newest checkpoint (config.json, model.safetensors: the averaged weights when the run
used --ema) into ``src/vqdraw/pretrained/NAME/`` with a train.json holding only what a user of the
model needs (the dataset and the training settings), and prints JSON: the checkpoint, parameters,
bytes, steps and training seconds. The model card's test figures come from the measurement scripts
in benchmarks/ (``pretrained_card.py``). Run once; not needed at install time.
"""

import json
import shutil
import sys
from pathlib import Path

from vqdraw.runs import read_train_json, resolve_model_dir

run = Path(sys.argv[1])
name = sys.argv[2] if len(sys.argv) > 2 else "mnist"
out = Path(__file__).resolve().parents[1] / "src/vqdraw/pretrained" / name
ckpt = resolve_model_dir(run)
out.mkdir(parents=True, exist_ok=True)
for file in ("config.json", "model.safetensors"):
    shutil.copyfile(ckpt / file, out / file)
train = read_train_json(run)
(out / "train.json").write_text(json.dumps({"model": train["model"], "train": train["train"]}, indent=2) + "\n")

rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
rows = [r for r in rows if r.get("step", 0) <= int(ckpt.name.removeprefix("ckpt-"))]
config = json.loads((out / "config.json").read_text())
report = {"name": name, "checkpoint": ckpt.name, "bytes": (out / "model.safetensors").stat().st_size,
          "steps": rows[-1]["step"] if rows else None, "train_seconds": rows[-1].get("time") if rows else None,
          "last_evaluation": next((r for r in reversed(rows) if "test_loss" in r or "test_mse" in r), None)}
print(json.dumps(report, indent=2))
