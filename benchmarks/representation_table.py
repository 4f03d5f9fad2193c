"""The table of benchmarks/contrastive_vs_plain.sh: plain against contrastive training, as JSON and a picture.

    python benchmarks/representation_table.py [RUNS_FOLDER] [--picture PNG]

For every run folder DATASET-OBJECTIVE-SEED under RUNS_FOLDER (default runs/contrastive): the
training steps and seconds, the last evaluation's test PSNR, the probe's linear and MLP test
accuracy at each code prefix and on raw pixels (``evaluation/probe.json``) and, where measured, the
sample FID (``evaluation/eval-samples.json``). Then, per dataset and objective, the mean and the
spread (min..max over seeds). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path


def read_run(folder: Path) -> dict | None:
    m = re.fullmatch(r"(.+)-(plain|contrastive\d*)-(\d+)", folder.name)
    probe = folder / "evaluation" / "probe.json"
    if not m or not probe.exists():
        return None
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    evals = [r for r in rows if "test_psnr" in r]
    p = json.loads(probe.read_text())
    out = {
        "dataset": m.group(1), "objective": m.group(2), "seed": int(m.group(3)),
        "steps": max(r.get("step", 0) for r in rows), "train_seconds": max(r.get("time", 0) for r in rows),
        "test_psnr": evals[-1]["test_psnr"] if evals else None,
        "linear": {r["stages"]: r["linear"]["test"] for r in p["prefixes"]},
        "mlp": {r["stages"]: r["mlp"]["test"] for r in p["prefixes"]},
        "pixels": {"linear": p["pixels"]["linear"]["test"], "mlp": p["pixels"]["mlp"]["test"]},
    }
    fid = folder / "evaluation" / "eval-samples.json"
    if fid.exists():
        out["sample_fid"] = json.loads(fid.read_text())["fid"]
    return out


def summarise(runs: list[dict]) -> dict:
    def stat(values):
        values = [v for v in values if v is not None]
        if not values:
            return None
        return {"mean": sum(values) / len(values), "min": min(values), "max": max(values), "n": len(values)}

    groups: dict[str, dict] = {}
    for r in runs:
        groups.setdefault(f"{r['dataset']} {r['objective']}", []).append(r)
    table = {}
    for key, rs in sorted(groups.items()):
        prefixes = sorted({int(k) for r in rs for k in r["linear"]})
        table[key] = {
            "seeds": sorted(r["seed"] for r in rs),
            "steps": stat([r["steps"] for r in rs]),
            "train_seconds": stat([r["train_seconds"] for r in rs]),
            "test_psnr": stat([r["test_psnr"] for r in rs]),
            "linear": {n: stat([r["linear"].get(n, r["linear"].get(str(n))) for r in rs]) for n in prefixes},
            "mlp": {n: stat([r["mlp"].get(n, r["mlp"].get(str(n))) for r in rs]) for n in prefixes},
            "pixels_linear": stat([r["pixels"]["linear"] for r in rs]),
            "pixels_mlp": stat([r["pixels"]["mlp"] for r in rs]),
            "sample_fid": stat([r.get("sample_fid") for r in rs]),
        }
    return table


def picture(table: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({k.rsplit(" ", 1)[0] for k in table})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.6), squeeze=False)
    colours = {"plain": "#1f5fbf", "contrastive": "#cf222e", "contrastive5": "#bf8700"}
    for ax, d in zip(axes[0], datasets):
        for objective, colour in colours.items():
            row = table.get(f"{d} {objective}")
            if not row:
                continue
            for kind, style in (("linear", "o-"), ("mlp", "s--")):
                xs = sorted(row[kind])
                ys = [row[kind][n]["mean"] for n in xs]
                lo = [row[kind][n]["mean"] - row[kind][n]["min"] for n in xs]
                hi = [row[kind][n]["max"] - row[kind][n]["mean"] for n in xs]
                ax.errorbar([6 * n for n in xs], ys, yerr=[lo, hi], fmt=style, color=colour, markersize=4,
                            capsize=2, label=f"{objective}, {kind} (n={len(row['seeds'])})")
            ax.axhline(row["pixels_linear"]["mean"], color="#777777", linestyle=":", linewidth=1)
            ax.axhline(row["pixels_mlp"]["mean"], color="#777777", linestyle="-.", linewidth=1)
        ax.set_xlabel("bits of the code prefix (6 per stage)")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{d} (grey: pixels, linear dotted, MLP dash-dot)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="?", default="runs/contrastive")
    ap.add_argument("--picture", default=None)
    args = ap.parse_args()
    runs = [r for f in sorted(Path(args.runs).iterdir()) if f.is_dir() and (r := read_run(f))]
    table = summarise(runs)
    if args.picture:
        picture(table, args.picture)
    print(json.dumps({"runs": runs, "table": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
