"""Shared pieces of the benchmark scripts: timing, FLOP counting, calibration, memory, JSON.

Every script prints one JSON object on stdout. Measurements that need a clean process (peak
memory, the calibration convolution) run in a fresh ``python`` subprocess of the same script.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def add_common_args(p) -> None:
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--no-calibration", action="store_true", help="skip the large-convolution calibration")


def setup(args) -> torch.device:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn, n: int, warmup: int, device: torch.device, on_step=None) -> list[float]:
    """Wall-clock seconds of `n` calls after `warmup` untimed ones (device synchronised)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
        if on_step is not None:
            on_step(i + 1)
    return times


def summary(times: list[float]) -> dict:
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "n": len(times),
    }


def count_flops(fn) -> int:
    """FLOPs of one call of `fn` (matrix products and convolutions, forward and backward), as
    counted by torch.utils.flop_counter (2 FLOPs per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def calibration(device: torch.device, reps: int = 5) -> dict:
    """GFLOP/s of a large 3x3 convolution (256 -> 256 channels, 28 x 28, batch 32), best layout."""
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(32, 256, 28, 28, generator=g).to(device)
    w = torch.randn(256, 256, 3, 3, generator=g).to(device)
    flops = 2 * 32 * 256 * 256 * 9 * 28 * 28
    out = {}
    for name, fmt in (("nchw", torch.contiguous_format), ("nhwc", torch.channels_last)):
        xx = x.contiguous(memory_format=fmt)
        with torch.inference_mode():
            t = time_calls(lambda: torch.nn.functional.conv2d(xx, w, padding=1), reps, 2, device)
        out[name] = flops / statistics.median(t) / 1e9
    return {"calibration_gflops": max(out.values()), "calibration_by_layout": out,
            "calibration_layer": "conv2d 3x3 256->256 @ 28x28, batch 32, fp32"}


def memory(device: torch.device) -> dict:
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def environment(device: torch.device) -> dict:
    env = {
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def run_child(script: str, args: list[str], timeout: float | None = None) -> dict:
    """Run `script` with `args` in a fresh interpreter and parse its JSON output."""
    cmd = [sys.executable, str(Path(__file__).parent / script), *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def emit(obj: dict) -> None:
    print(json.dumps(obj, sort_keys=True))
