#!/usr/bin/env python3
"""Times one Python reference stain separation for `cargo xtask bench stain`.

    bench_stain.py --impl torchstain|histomicstk --image PNG [--mirror SIDE] [--repeats N]
                   [--stain-ref DIR]
    bench_stain.py --check

Prints one JSON line on stdout: seconds per repeat, image size, peak RSS. What is timed:

  torchstain   torchstain 1.4.1 numpy MacenkoNormalizer stain matrix + concentrations + maxC
               (`__compute_matrices(img, Io=240, alpha=1, beta=0.15)`, as the stain-ref harness
               `impls.torchstain_numpy` calls it)
  histomicstk  HistomicsTK 1.4.0 `stain_unmixing_routine(..., "macenko_pca")` +
               `color_deconvolution(img, W, I_0=None)` (as `impls.histomicstk`)

The caller sets OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / ... to the thread count. `--mirror SIDE`
builds the SIDE x SIDE mirror tiling of make_images.py (and of the Rust benchmark). Peak RSS is
VmHWM: `peak_rss_bytes` for the whole process (imports and decoding included); `run_peak_bytes`
after resetting VmHWM once the image is loaded (Linux /proc/self/clear_refs), so it covers the
timed calls, the image and the interpreter. `--stain-ref DIR` reuses the harness's HistomicsTK
import (its `slicer_cli_web` stub); without it the same stub is installed here.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import types

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "OPENBLAS_CORETYPE")

TIMED = {
    "torchstain": "torchstain numpy MacenkoNormalizer: stain matrix + concentrations + maxC "
                  "(Io=240, alpha=1, beta=0.15)",
    "histomicstk": "HistomicsTK stain_unmixing_routine(macenko_pca) + color_deconvolution",
}


def status_bytes(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def htk_module(stain_ref):
    if stain_ref:
        sys.path.insert(0, stain_ref)
        import impls  # the harness's adapters
        return impls._htk_import()
    if "slicer_cli_web" not in sys.modules:  # only needed by histomicstk.cli; not on PyPI
        m = types.ModuleType("slicer_cli_web")
        m.ctk_cli_adjustment = types.ModuleType("slicer_cli_web.ctk_cli_adjustment")
        sys.modules["slicer_cli_web"] = m
        sys.modules["slicer_cli_web.ctk_cli_adjustment"] = m.ctk_cli_adjustment
    import histomicstk.preprocessing.color_deconvolution as cd
    return cd


def mirror_tile(a, h, w):
    """make_images.mirror_tile of the stain-ref harness."""
    import numpy as np
    row = np.concatenate([a, a[:, ::-1]], axis=1)
    blk = np.concatenate([row, row[::-1]], axis=0)
    reps = (h // blk.shape[0] + 1, w // blk.shape[1] + 1, 1)
    return np.ascontiguousarray(np.tile(blk, reps)[:h, :w])


def load(path, mirror):
    import numpy as np
    from PIL import Image
    with Image.open(path) as im:
        img = np.asarray(im.convert("RGB"))
    if mirror:
        img = mirror_tile(img, mirror, mirror)
    return np.ascontiguousarray(img)


def checksum(img):
    """[sum_y (y+1) rowsum_y, sum_x (x+1) colsum_x] over all bytes (= the Rust side)."""
    import numpy as np
    rows = img.sum(axis=(1, 2), dtype=np.uint64)
    cols = img.sum(axis=(0, 2), dtype=np.uint64)
    wr = np.arange(1, rows.size + 1, dtype=np.uint64)
    wc = np.arange(1, cols.size + 1, dtype=np.uint64)
    return [int((rows * wr).sum(dtype=np.uint64)), int((cols * wc).sum(dtype=np.uint64))]


def make_fn(name, stain_ref):
    if name == "torchstain":
        import torchstain
        n = torchstain.normalizers.MacenkoNormalizer(backend="numpy")

        def fn(img):
            return n._NumpyMacenkoNormalizer__compute_matrices(img, 240, 1, 0.15)
        return fn
    if name == "histomicstk":
        cd = htk_module(stain_ref)

        def fn(img):
            w = cd.stain_unmixing_routine(img, stains=["hematoxylin", "eosin"],
                                          stain_unmixing_method="macenko_pca")
            return w, cd.color_deconvolution(img, w, I_0=None)
        return fn
    raise SystemExit(f"unknown --impl {name!r} (torchstain, histomicstk)")


def check(stain_ref):
    from importlib.metadata import version
    import numpy
    import torchstain  # noqa: F401
    htk_module(stain_ref)
    out = dict(python=platform.python_version(), numpy=numpy.__version__,
               torchstain=version("torchstain"), histomicstk=version("histomicstk"),
               env={k: os.environ.get(k) for k in THREAD_VARS if os.environ.get(k)})
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--impl", choices=sorted(TIMED))
    ap.add_argument("--image")
    ap.add_argument("--mirror", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--stain-ref", default="")
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    if a.check:
        check(a.stain_ref)
        return
    if not a.impl or not a.image:
        ap.error("--impl and --image are required")
    fn = make_fn(a.impl, a.stain_ref)
    t0 = time.perf_counter()
    img = load(a.image, a.mirror)
    load_s = time.perf_counter() - t0
    csum = checksum(img)
    load_peak = status_bytes("VmHWM")
    peak_reset = reset_peak()
    times = []
    for _ in range(max(1, a.repeats)):
        t0 = time.perf_counter()
        r = fn(img)
        times.append(time.perf_counter() - t0)
        del r  # one result alive at a time: the peak is that of one call
    run_peak = status_bytes("VmHWM")
    times_sorted = sorted(times)
    n = len(times_sorted)
    med = times_sorted[n // 2] if n % 2 else 0.5 * (times_sorted[n // 2 - 1] + times_sorted[n // 2])
    h, w = img.shape[:2]
    peak = max(x for x in (load_peak, run_peak) if x is not None) if (load_peak or run_peak) else None
    print(json.dumps(dict(
        impl=a.impl, timed=TIMED[a.impl], width=w, height=h, megapixels=w * h / 1e6,
        load_s=load_s, times_s=times, median_s=med, peak_rss_bytes=peak,
        run_peak_bytes=run_peak, peak_reset=peak_reset, image_bytes=int(img.nbytes),
        checksum=csum)))


if __name__ == "__main__":
    main()
