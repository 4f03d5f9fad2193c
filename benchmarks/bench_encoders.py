"""Compare VQ-DRAW encoders on one model: greedy (Algorithm 1), beam search, distilled encoders.

    python benchmarks/bench_encoders.py --model runs/mnist --dataset mnist-embedded --images 500
    python benchmarks/bench_encoders.py --model M --beams 8 \
        --distilled independent=runs/enc-independent --distilled autoregressive=runs/enc-ar

Distilled encoders are named LABEL=FOLDER (a folder written by ``vqdraw distill -o FOLDER``, for
this model's weights); by default the one in the model folder, labelled ``distilled``.

For every method it reports, on the first --images test images:

* quality: normalised MSE (paper units), pixel MSE and PSNR of the full code and of every prefix
  of the returned code (the prefix a progressive decoder would show; beam codes are searched
  for the full length, so their prefixes are not themselves beam-optimal);
* speed: seconds per image to produce the codes (``model.encode(x, beam=...)`` or ``encode(x, encoder=...)``,
  codes only), the median of --repeats runs over the first --time-images images, in chunks of
  --chunk images, after one warm-up run, with a fixed number of CPU threads (--threads,
  default torch's);
* memory: how far the peak resident set size of a fresh process rises above its resident size
  just before the first encode (model, data and torch already loaded), while encoding the
  --time-images images in chunks of --chunk: the kernel's peak mark (VmHWM) is reset there
  through /proc/self/clear_refs and read afterwards (fallback where that is impossible:
  ``ru_maxrss``, the peak since process start). It counts every allocation (torch's CPU
  allocator, oneDNN scratch space), but only the peak: memory freed and reused does not add up.
  This runs in its own process per method with glibc told to give every freed block of 64 KiB
  or more back to the system (MALLOC_MMAP_THRESHOLD_=65536), so the peak follows the live
  allocations; with glibc's default dynamic threshold freed blocks up to 32 MiB stay resident
  and the numbers (``peak_rss_growth_default_malloc_mib``, from the timing process) depend on
  the order of allocations more than on the encoder.

Prints one JSON object. ``--markdown`` also prints the summary table used in docs/encoders.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="runs/mnist", help="model or run folder")
    p.add_argument("--dataset", default="mnist-embedded")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--images", type=int, default=500, help="test images for the quality numbers")
    p.add_argument("--beams", type=int, nargs="*", default=[2, 4, 8, 16])
    p.add_argument("--no-distilled", action="store_true", help="skip the distilled encoder")
    p.add_argument("--distilled", action="append", default=None, metavar="LABEL=FOLDER",
                   help="a distilled encoder to compare (repeatable; default: distilled=MODEL)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per method (median reported)")
    p.add_argument("--time-images", type=int, default=50, help="images per timed run")
    p.add_argument("--chunk", type=int, default=50, help="images per encode call")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch.get_num_threads())")
    p.add_argument("--interleaved", type=int, default=0, metavar="ROUNDS",
                   help="also time all methods in one process, round-robin, ROUNDS rounds after a warm-up "
                   "(on a shared machine the speed ratios then see the same load; default 0 = off)")
    p.add_argument("--markdown", action="store_true", help="also print a markdown table (to stderr)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def distilled_folders(args) -> dict[str, str]:
    """{label: folder} of the distilled encoders to compare."""
    if args.no_distilled:
        return {}
    pairs = args.distilled or [f"distilled={args.model}"]
    out = {}
    for pair in pairs:
        label, sep, folder = pair.partition("=")
        if not sep or not label or not folder or label == "greedy" or label.startswith("beam"):
            raise SystemExit(f"--distilled: expected LABEL=FOLDER (LABEL not greedy/beamN), got {pair!r}")
        out[label] = folder
    return out


def method_kwargs(name: str, model, args) -> dict:
    if name == "greedy":
        return {}
    folders = distilled_folders(args)
    if name in folders:
        from vqdraw.training.distill import load_distilled

        return {"encoder": load_distilled(folders[name], model)}
    return {"beam": int(name.removeprefix("beam"))}


# ---------------------------------------------------------------------- one method, own process
def interleaved(args, methods: list[str]) -> dict:
    """{method: median ms per image} timing every method in turn, round after round, in this
    process: a change of machine load hits all methods alike."""
    import torch

    from vqdraw.data import load_dataset
    from vqdraw.core.model import VQDraw

    if args.threads:
        torch.set_num_threads(args.threads)
    model = VQDraw.load(args.model).eval()
    timed = load_dataset(args.dataset, "test", args.data_dir).batch(range(args.time_images))
    kwargs = {m: method_kwargs(m, model, args) for m in methods}
    times: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(args.interleaved + 1):
        for m in methods:
            t0 = time.perf_counter()
            for chunk in timed.split(args.chunk):
                model.encode(chunk, **kwargs[m])
            times[m].append((time.perf_counter() - t0) / len(timed))
    return {m: 1000 * statistics.median(t[1:]) for m, t in times.items()}  # the first round warms up


def worker(args) -> dict:
    import torch

    from vqdraw.data import load_dataset
    from vqdraw.core.model import VQDraw

    if args.threads:
        torch.set_num_threads(args.threads)
    model = VQDraw.load(args.model).eval()
    test = load_dataset(args.dataset, "test", args.data_dir)
    images = test.batch(range(min(args.images, len(test))))
    kwargs = method_kwargs(args.worker, model, args)
    if args.memory_only:
        base = reset_peak_rss()
        for chunk in images[: args.time_images].split(args.chunk):
            model.encode(chunk, **kwargs)
        return {"method": args.worker, "peak_rss_growth_mib": (peak_rss() - base) / 1024,
                "peak_measured_with": PEAK_SOURCE}

    # Memory: reset the kernel's peak-RSS mark to the current RSS, then the first run (which
    # includes one-time costs such as oneDNN's kernels and scratch space) and the timed runs.
    base = reset_peak_rss()
    timed = images[: args.time_images]
    times = []
    for _ in range(args.repeats + 1):
        t0 = time.perf_counter()
        for chunk in timed.split(args.chunk):
            model.encode(chunk, **kwargs)
        times.append((time.perf_counter() - t0) / len(timed))
    times = times[1:]  # the first run is the warm-up
    peak = peak_rss()

    codes, finals, prefix_norm = [], [], []
    for chunk in images.split(args.chunk):
        res = model.encode(chunk, return_reconstruction=True, **kwargs)
        codes.append(res.codes)
        chosen = res.losses.gather(2, res.codes.unsqueeze(2)).squeeze(2)  # (B, N) normalised MSE per prefix
        prefix_norm.append(chosen)
        finals.append(chosen[:, -1])
    codes = torch.cat(codes)
    prefix_norm = torch.cat(prefix_norm).mean(0)
    prefix_pix = prefix_pixel_mse(model, images, codes, args.chunk)
    psnr = [10 * math.log10(1 / max(m, 1e-12)) for m in prefix_pix]
    return {
        "method": args.worker,
        "images": len(images),
        "mse": prefix_norm[-1].item(),
        "mse_pixels": prefix_pix[-1],
        "psnr": psnr[-1],
        "prefix_mse": [round(v, 5) for v in prefix_norm.tolist()],
        "prefix_mse_pixels": [round(v, 6) for v in prefix_pix],
        "prefix_psnr": [round(v, 3) for v in psnr],
        "ms_per_image": 1000 * statistics.median(times),
        "images_per_second": 1 / statistics.median(times),
        "ms_per_image_runs": [round(1000 * t, 3) for t in times],
        "peak_rss_growth_default_malloc_mib": (peak - base) / 1024,
        "threads": torch.get_num_threads(),
        "final_losses": torch.cat(finals).tolist(),
    }


PEAK_SOURCE = "VmHWM after clear_refs"


def reset_peak_rss() -> int:
    """Reset the peak-RSS mark (Linux: write 5 to /proc/self/clear_refs) and return the current
    RSS in KiB. Where that is impossible, fall back to ru_maxrss (a peak since process start)."""
    global PEAK_SOURCE
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kib("VmRSS")
    except OSError:
        PEAK_SOURCE = "ru_maxrss (peak since start; could not reset)"
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_rss() -> int:
    """Peak RSS in KiB since the last reset (or since start, see reset_peak_rss)."""
    if PEAK_SOURCE.startswith("VmHWM"):
        return _status_kib("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def prefix_pixel_mse(model, images, codes, chunk: int) -> list[float]:
    """Pixel MSE of every prefix of `codes`, decoded in one pass (the decoder's own stage loop,
    keeping each stage's canvas): a list of N floats."""
    import torch

    n = codes.shape[1]
    sums = torch.zeros(n, dtype=torch.float64)
    with torch.inference_mode():
        for x, c in zip(images.split(chunk), codes.split(chunk)):
            canvas = torch.zeros_like(x)
            rows = torch.arange(x.shape[0])
            for stage in range(n):
                canvas = model.propose(canvas, stage)[rows, c[:, stage]]
                sums[stage] += (model.to_data(canvas) - x).pow(2).flatten(1).mean(1).sum().double()
    return (sums / images.shape[0]).tolist()


# ---------------------------------------------------------------------- driver
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    import torch

    threads = args.threads or torch.get_num_threads()
    methods = ["greedy"] + [f"beam{b}" for b in args.beams] + list(distilled_folders(args))
    passthrough = ["--model", args.model, "--dataset", args.dataset, "--images", str(args.images),
                   "--repeats", str(args.repeats), "--time-images", str(args.time_images),
                   "--chunk", str(args.chunk), "--threads", str(threads)]
    if args.data_dir:
        passthrough += ["--data-dir", args.data_dir]
    for label, folder in distilled_folders(args).items():
        passthrough += ["--distilled", f"{label}={folder}"]
    results = []
    for m in methods:
        print(f"bench_encoders: {m} …", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, __file__, "--worker", m, *passthrough],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            results.append({"method": m, "error": proc.stderr.strip().splitlines()[-1:]})
            continue
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        # memory in a second fresh process where glibc returns every freed block of 64 KiB or more
        # to the system at once (no dynamic mmap threshold, no trimming delay), so that the peak
        # RSS follows the peak of live allocations rather than the allocator's retained free space
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
        mem = subprocess.run([sys.executable, __file__, "--worker", m, "--memory-only", *passthrough],
                             capture_output=True, text=True, env=env)
        if mem.returncode == 0:
            result.update(json.loads(mem.stdout.strip().splitlines()[-1]))
        results.append(result)
    if args.interleaved:
        print("bench_encoders: interleaved timing …", file=sys.stderr, flush=True)
        ms = interleaved(args, methods)
        for r in results:
            r["interleaved_ms_per_image"] = ms.get(r["method"])
    greedy = next((r for r in results if r["method"] == "greedy" and "error" not in r), None)
    g = greedy.get("final_losses") if greedy is not None else None
    for r in results:
        finals = r.pop("final_losses", None)
        if g is not None and finals is not None and r is not greedy:
            # per image, final normalised MSE strictly below / above greedy's
            r["better_than_greedy"] = sum(a < b for a, b in zip(finals, g)) / len(g)
            r["worse_than_greedy"] = sum(a > b for a, b in zip(finals, g)) / len(g)
    report = {
        "command": "python benchmarks/bench_encoders.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "model": args.model,
        "dataset": f"{args.dataset} test, first {args.images} images",
        "threads": threads,
        "torch": torch.__version__,
        "memory": "peak_rss_growth_mib: peak RSS of a fresh process per method above its RSS just before "
                  "the first encode (peak mark reset via /proc/self/clear_refs; see peak_measured_with), "
                  "encoding --time-images images in chunks of --chunk with glibc told to unmap freed "
                  "blocks >= 64 KiB (MALLOC_MMAP_THRESHOLD_=65536); peak_rss_growth_default_malloc_mib: "
                  "the same over the warm-up and timed runs with the default allocator settings",
        "results": results,
    }
    print(json.dumps(report, indent=2))
    if args.markdown:
        print(markdown(report), file=sys.stderr)
    return 0


def markdown(report: dict) -> str:
    rows = ["| encoder | test MSE (pixels) | PSNR (dB) | normalised MSE | PSNR by prefix 1/2/4/6/8/10 stages | "
            "better / worse than greedy | ms per image | peak RSS growth (MiB) |",
            "|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        if "error" in r:
            rows.append(f"| {r['method']} | error: {r['error']} |")
            continue
        p = r["prefix_psnr"]
        picks = [i for i in (1, 2, 4, 6, 8, 10) if i <= len(p)]
        prefix = " / ".join(f"{p[i - 1]:.1f}" for i in picks)
        vs = "—" if "better_than_greedy" not in r else \
            f"{100 * r['better_than_greedy']:.0f}% / {100 * r['worse_than_greedy']:.0f}%"
        rows.append(f"| {r['method']} | {r['mse_pixels']:.5f} | {r['psnr']:.2f} | {r['mse']:.4f} | {prefix} | "
                    f"{vs} | {r['ms_per_image']:.2f} | {r['peak_rss_growth_mib']:.0f} |")
    return "\n".join(rows) + "\n\n" + prefix_markdown(report)


def prefix_markdown(report: dict) -> str:
    """PSNR (dB) of every prefix n = 1..N by encoder, images/s and the speed-up over greedy."""
    ok = [r for r in report["results"] if "error" not in r]
    if not ok:
        return ""
    n = len(ok[0]["prefix_psnr"])
    greedy = next((r for r in ok if r["method"] == "greedy"), None)
    both = all(r.get("interleaved_ms_per_image") for r in ok)
    extra = " images/s (interleaved) | × greedy (interleaved) |" if both else ""
    rows = ["| encoder | " + " | ".join(str(i) for i in range(1, n + 1)) + " | images/s | × greedy |" + extra,
            "|---|" + "---|" * n + "---|---|" + ("---|---|" if both else "")]
    for r in ok:
        speed = 1000 / r["ms_per_image"]
        times = "—" if greedy is None else f"{greedy['ms_per_image'] / r['ms_per_image']:.1f}"
        row = f"| {r['method']} | " + " | ".join(f"{v:.2f}" for v in r["prefix_psnr"]) + f" | {speed:.0f} | {times} |"
        if both:
            ms = r["interleaved_ms_per_image"]
            ratio = "—" if greedy is None else f"{greedy['interleaved_ms_per_image'] / ms:.1f}"
            row += f" {1000 / ms:.0f} | {ratio} |"
        rows.append(row)
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
