#!/usr/bin/env python3
"""Times the PIL + torchvision CLASS-M per-patch training data pipeline for `cargo xtask bench data`.

    bench_data.py --files LIST [--resize N] [--center C] [--crop S] [--workers W] [--batch B]
                  [--min-seconds T] [--seed S]
    bench_data.py --check

LIST is a text file with one image path per line (blank lines are skipped; relative paths are
taken relative to the working directory). Defaults: --resize 0 (no resize), --center 282,
--crop 256, --workers 1, --batch 32, --min-seconds 5, --seed 0. `--check` prints the library
versions as one JSON line and exits 0 if the imports work (nonzero otherwise).

What each patch goes through (the order of the CLASS-M authors' PIL + torchvision code):

  1. PIL.Image.open(path).convert("RGB")
  2. if N > 0: img.resize((N, N), PIL.Image.BILINEAR)
  3. transforms.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1) on the PIL image (hue 0)
  4. stain separation in numpy float32: I = np.asarray(img, float32);
     OD = log10(255 / max(I, 1)) per channel;
     H = clip(OD @ m_h / (2 * max_h), 0, 1), E = clip(OD @ m_e / (2 * max_e), 0, 1) with the fixed
     (timing-only) constants m_h = (1.838, 0.0341, -0.76), m_e = (-1.373, 0.772, 1.215),
     max_h = max_e = 0.5
  5. H and E become 1 x H x W float32 tensors (torch.from_numpy) and each goes, with its own random
     draws, through transforms.Compose of
       ColorJitter(brightness=0.1)  (factor U[0.9, 1.1], multiply, clamp to [0, 1]),
       RandomRotation(degrees=360, interpolation=NEAREST, fill=0),
       CenterCrop(C), RandomCrop(S), RandomHorizontalFlip(), RandomVerticalFlip(),
       Normalize(mean, std) with H (0.1738, 0.1876) and E (0.2507, 0.1546)
  6. the dataset item is (H, E); torch.utils.data.DataLoader(batch_size=B, shuffle=True,
     num_workers=W if W > 1 else 0, drop_last=False, generator seeded with --seed) collates them.

Threads: OMP_NUM_THREADS / MKL_NUM_THREADS / OPENBLAS_NUM_THREADS / ... are set to 1 before numpy
and torch are imported, and torch.set_num_threads(1) is called in the main process and in every
loader worker (worker_init_fn). W <= 1 runs everything in the main process; W > 1 uses W worker
processes (the default multiprocessing start method of the platform, fork on Linux with Python
< 3.14) and no persistent_workers, so each epoch starts its workers inside the timed region, as a
training loop without persistent_workers does.

Timing: one untimed warm-up pass over the first min(64, n) patches (a loader with the same
settings), then the loader is iterated over the whole list, epoch after epoch, stopping at the
first epoch boundary after --min-seconds; time.perf_counter covers from creating the first epoch's
iterator to the last batch. `patches` counts the items in the timed batches (whole epochs).

Prints one JSON line on stdout: impl, versions, workers, batch, resize, center, crop, files,
epochs, patches, seconds, patches_per_s, peak_rss_bytes, timed, seed, threads. peak_rss_bytes is
VmHWM of the main process only (imports, warm-up and timed run included); the memory of loader
worker processes (W > 1) is not included. Errors (unreadable or empty list, missing or undecodable
image, bad sizes) print a message on stderr and exit with code 2.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

from bench_stain import status_bytes  # same folder: the script's own directory is on sys.path

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
for _v in THREAD_VARS:  # before numpy / torch are imported (all imports of them are below)
    os.environ[_v] = "1"

IMPL = "pil+torchvision"

# Fixed stain constants (timing only; not a fitted stain matrix).
M_H = (1.838, 0.0341, -0.76)
M_E = (-1.373, 0.772, 1.215)
MAX_H = 0.5
MAX_E = 0.5
NORM_H = (0.1738, 0.1876)
NORM_E = (0.2507, 0.1546)


def timed_steps(resize, center, crop):
    rs = f"resize({resize}x{resize}, BILINEAR)" if resize > 0 else "no resize"
    return (f"PIL open+convert(RGB); {rs}; ColorJitter(b=0.1,c=0.1,s=0.1) on PIL; "
            f"numpy float32 OD=log10(255/max(I,1)), H/E=clip(OD@m/(2*max),0,1); "
            f"per channel (H, E) independently: ColorJitter(brightness=0.1), "
            f"RandomRotation(360, NEAREST, fill=0), CenterCrop({center}), RandomCrop({crop}), "
            f"RandomHorizontalFlip, RandomVerticalFlip, Normalize; "
            f"DataLoader shuffle+collate")


def die(msg):
    print(f"bench_data.py: {msg}", file=sys.stderr)
    sys.exit(2)


def versions():
    from importlib.metadata import version
    import numpy
    import PIL
    import torch
    import torchvision
    return dict(python=platform.python_version(), torch=torch.__version__,
                torchvision=torchvision.__version__,
                pillow=getattr(PIL, "__version__", None) or version("pillow"),
                numpy=numpy.__version__)


def check():
    try:
        v = versions()
        import torchvision.transforms  # noqa: F401
        import torch.utils.data  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure is "not usable"
        print(f"bench_data.py: import failed: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    v["env"] = {k: os.environ.get(k) for k in THREAD_VARS}
    print(json.dumps(v))


def worker_init(_worker_id):
    import torch
    torch.set_num_threads(1)


def read_list(path):
    try:
        with open(path) as f:
            files = [ln.strip() for ln in f]
    except (OSError, UnicodeDecodeError) as e:
        die(f"cannot read --files {path!r}: {e}")
    files = [p for p in files if p]
    if not files:
        die(f"--files {path!r} lists no images")
    missing = [p for p in files if not os.path.isfile(p)]
    if missing:
        die(f"{len(missing)} listed image(s) not found, first: {missing[0]!r}")
    return files


def make_dataset(files, resize, center, crop):
    import numpy as np
    import torch
    from PIL import Image
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode

    m_h = np.asarray(M_H, dtype=np.float32)
    m_e = np.asarray(M_E, dtype=np.float32)
    s_h = np.float32(2.0 * MAX_H)
    s_e = np.float32(2.0 * MAX_E)
    rgb_jitter = transforms.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1)

    def channel_aug(mean, std):
        return transforms.Compose([
            transforms.ColorJitter(brightness=0.1),  # factor U[0.9,1.1]; x*f clamped to [0,1]
            transforms.RandomRotation(degrees=360, interpolation=InterpolationMode.NEAREST,
                                      fill=0),
            transforms.CenterCrop(center),
            transforms.RandomCrop(crop),
            transforms.RandomHorizontalFlip(),
            transforms.RandomVerticalFlip(),
            transforms.Normalize(mean=[mean], std=[std]),
        ])

    aug_h = channel_aug(*NORM_H)
    aug_e = channel_aug(*NORM_E)

    class PatchDataset(torch.utils.data.Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            img = Image.open(files[i]).convert("RGB")
            if resize > 0:
                img = img.resize((resize, resize), Image.BILINEAR)
            img = rgb_jitter(img)
            i_rgb = np.asarray(img, dtype=np.float32)
            od = np.log10(np.float32(255.0) / np.maximum(i_rgb, np.float32(1.0)))
            h = np.clip(od @ m_h / s_h, 0.0, 1.0)
            e = np.clip(od @ m_e / s_e, 0.0, 1.0)
            th = aug_h(torch.from_numpy(np.ascontiguousarray(h, dtype=np.float32)[None]))
            te = aug_e(torch.from_numpy(np.ascontiguousarray(e, dtype=np.float32)[None]))
            return th, te

    return PatchDataset()


def make_loader(ds, batch, workers, seed):
    import torch
    g = torch.Generator()
    g.manual_seed(seed)
    return torch.utils.data.DataLoader(
        ds, batch_size=batch, shuffle=True, num_workers=workers if workers > 1 else 0,
        drop_last=False, generator=g, worker_init_fn=worker_init if workers > 1 else None)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files")
    ap.add_argument("--resize", type=int, default=0)
    ap.add_argument("--center", type=int, default=282)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--min-seconds", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    if a.check:
        check()
        return
    if not a.files:
        ap.error("--files is required")  # exits 2
    if a.resize < 0 or a.center < 1 or a.crop < 1 or a.batch < 1 or a.workers < 0:
        die("--resize must be >= 0, --center/--crop/--batch >= 1, --workers >= 0")
    if a.crop > a.center:
        die(f"--crop {a.crop} is larger than --center {a.center}")
    files = read_list(a.files)

    import torch
    torch.manual_seed(a.seed)
    torch.set_num_threads(1)
    ds = make_dataset(files, a.resize, a.center, a.crop)
    n = len(files)
    try:
        # Untimed warm-up: same loader settings over the first min(64, n) patches.
        warm = torch.utils.data.Subset(ds, range(min(64, n)))
        for _ in make_loader(warm, a.batch, a.workers, a.seed):
            pass
        loader = make_loader(ds, a.batch, a.workers, a.seed)
        patches = 0
        epochs = 0
        t0 = time.perf_counter()
        while True:
            for bh, _be in loader:
                patches += bh.shape[0]
            epochs += 1
            seconds = time.perf_counter() - t0
            if seconds >= a.min_seconds:
                break
    except Exception as e:  # noqa: BLE001 - decoding / transform errors, from workers too
        die(f"pipeline failed: {type(e).__name__}: {e}")
    print(json.dumps(dict(
        impl=IMPL, versions=versions(), workers=a.workers, batch=a.batch, resize=a.resize,
        center=a.center, crop=a.crop, files=n, epochs=epochs, patches=patches, seconds=seconds,
        patches_per_s=patches / seconds, peak_rss_bytes=status_bytes("VmHWM"),
        timed=timed_steps(a.resize, a.center, a.crop), seed=a.seed,
        threads=dict(torch=torch.get_num_threads(),
                     env={k: os.environ.get(k) for k in THREAD_VARS}))))


if __name__ == "__main__":
    main()
