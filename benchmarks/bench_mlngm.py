"""Speed and peak memory of MLNGM: the per-voxel loop as published, ``mlngm`` (NumPy) and ``mlngm_torch``.

All timings come from one run of this script on one machine. The loop version is slow, so it is timed on a
512 x 512 slice and on a small 64 x 64 x 16 volume; ``mlngm`` and ``mlngm_torch`` are timed on those and on a
256 x 256 x 64 volume. Ratios compare runs on the same input.

Peak memory is measured two ways and both are printed:
- ``rss_MiB``: growth of the peak resident set size over one call, in a fresh subprocess per case, after
  imports and input creation (Linux ``VmHWM`` reset via ``/proc/self/clear_refs``; ``ru_maxrss`` elsewhere);
  it covers NumPy and PyTorch alike.
- ``traced_MiB``: ``tracemalloc`` peak of one call in this process (NumPy and Python allocations only, so it
  is given for the NumPy implementations and left blank for Torch, whose buffers it cannot see).

    python benchmarks/bench_mlngm.py --repeats 5
    python benchmarks/bench_mlngm.py --repeats 3 --threads 1 --no-memory

``mlngm`` and the loop run in one thread whatever ``--threads`` says; it sets PyTorch's intra-op threads. On a
machine whose cores are busy with other work, more PyTorch threads can be much slower than one.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lmisa_lite.mlngm import mlngm, mlngm_torch
from lmisa_lite.mlngm_reference import literal_mlngm

SHAPES = {"slice": (512, 512), "small_volume": (64, 64, 16), "volume": (256, 256, 64)}
METHODS = {
    "loop": lambda image: literal_mlngm(image),
    "mlngm": lambda image: mlngm(image),
    "torch": lambda image: mlngm_torch(torch.from_numpy(image)[None, None]),
}
# The loop is not run on the 256 x 256 x 64 volume: at ~15 us per voxel that alone takes over a minute.
CASES = [(m, s) for s in SHAPES for m in METHODS if not (m == "loop" and s == "volume")]


def phantom(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Float32 test image: nested ellipses (sharp edges), smooth texture and noise."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt((grids[0] / 0.8) ** 2 + (grids[1] / 0.6) ** 2)
    texture = ndimage.gaussian_filter(rng.standard_normal(shape), 3)
    image = 100.0 * (r < 0.9) + 60.0 * (r < 0.4) + 30.0 * texture
    return (image + 5.0 * rng.standard_normal(shape)).astype(np.float32)


def time_case(method: str, shape: tuple[int, ...], repeats: int) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU seconds (all threads) of ``repeats`` calls."""
    image = phantom(shape)
    run = METHODS[method]
    if method != "loop":
        run(image)  # warm-up: first-call costs (allocator, thread pools, lazy imports)
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        run(image)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def traced_peak_mib(method: str, shape: tuple[int, ...]) -> float | None:
    if method == "torch":
        return None
    image = phantom(shape)
    tracemalloc.start()
    METHODS[method](image)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def rss_worker(method: str, shape_name: str) -> None:
    """Subprocess entry: print the peak-RSS growth (MiB) of one call after imports and input creation.

    Linux carries ``ru_maxrss`` over from the parent through fork and exec, so a child's ``getrusage`` peak
    starts at the parent's size; the per-process high-water mark ``VmHWM``, reset through
    ``/proc/self/clear_refs``, does not. ``ru_maxrss`` is the fallback where ``/proc`` is missing.
    """
    image = phantom(SHAPES[shape_name])
    METHODS[method](phantom((16, 16, 8) if image.ndim == 3 else (16, 16)))  # load kernels, start thread pools
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset VmHWM to the current resident size
        before = _status_kib("VmRSS")
        METHODS[method](image)
        grown_kib = _status_kib("VmHWM") - before
    except OSError:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        METHODS[method](image)
        scale = 1 / 1024 if sys.platform == "darwin" else 1  # bytes on macOS, KiB on Linux
        grown_kib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * scale
    print(json.dumps({"rss_MiB": grown_kib / 1024}))


def rss_peak_mib(method: str, shape_name: str, threads: int | None) -> float:
    command = [sys.executable, str(Path(__file__).resolve()), "--rss-worker", method, shape_name]
    if threads:
        command += ["--threads", str(threads)]
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])["rss_MiB"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per case for mlngm and torch")
    parser.add_argument("--loop-repeats", type=int, default=1, help="timed calls per case for the loop")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurements")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads for mlngm_torch (default: PyTorch's choice)")
    parser.add_argument("--rss-worker", nargs=2, metavar=("METHOD", "SHAPE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_worker:
        rss_worker(*args.rss_worker)
        return 0
    if args.repeats < 1 or args.loop_repeats < 1:
        parser.error("--repeats and --loop-repeats must be >= 1")

    print(f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs ({platform.machine()}), torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"repeats: loop {args.loop_repeats}, mlngm/torch {args.repeats}; median_s: wall-clock median, "
          "cpu_s: median process CPU time (all threads)\n")
    columns = ("median_s", 10), ("min_s", 9), ("cpu_s", 9), ("rss_MiB", 9), ("traced_MiB", 12)
    header = f"{'input':<22}{'method':<8}" + "".join(f"{name:>{width}}" for name, width in columns)
    print(header)
    print("-" * len(header))
    medians: dict[tuple[str, str], float] = {}
    for method, shape_name in CASES:
        shape = SHAPES[shape_name]
        seconds, cpu = time_case(method, shape, args.loop_repeats if method == "loop" else args.repeats)
        medians[method, shape_name] = statistics.median(seconds)
        rss = traced = ""
        if not args.no_memory:
            rss = f"{rss_peak_mib(method, shape_name, args.threads):.1f}"
            peak = traced_peak_mib(method, shape)
            traced = "" if peak is None else f"{peak:.1f}"
        label = f"{shape_name} {'x'.join(map(str, shape))}"
        median = medians[method, shape_name]
        cpu_s = statistics.median(cpu)
        print(f"{label:<22}{method:<8}{median:>10.4f}{min(seconds):>9.4f}{cpu_s:>9.3f}{rss:>9}{traced:>12}",
              flush=True)

    print("\nspeed-ups (ratio of medians, same input):")
    for shape_name in ("slice", "small_volume"):
        loop = medians["loop", shape_name]
        print(f"  {shape_name:<13} loop/mlngm {loop / medians['mlngm', shape_name]:8.1f}x   "
              f"loop/torch {loop / medians['torch', shape_name]:8.1f}x")
    slice_ratio = medians["loop", "slice"] / medians["mlngm", "slice"]
    volume_s = medians["mlngm", "volume"]
    print("\ntargets:")
    verdict = "met" if slice_ratio >= 30 else "NOT met"
    print(f"  loop/mlngm on 512x512 >= 30x: {slice_ratio:.1f}x -> {verdict}")
    print(f"  mlngm on 256x256x64 < 2 s:   {volume_s:.2f} s -> {'met' if volume_s < 2 else 'NOT met'}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (other processes share these CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
