"""Host input pipelines for SimCLR on folders of JPEG photos: views delivered per second.

    python experiments/benchmarks/data.py --folder=PATH --workers=N [--seconds=20] --out=DIR
        [--make_folder=COUNT] [--batch=64]

Both sides read the same ImageNet-like folder (``PATH/train/<class>/<name>.JPEG``, or PATH
itself when it has no ``train`` split), decode every image once, make two 224 px views of it
(RandomResizedCrop, horizontal flip) in N worker processes and hand uint8 batches
[64, 2, 224, 224, 3] to the parent process. What counts is views reaching the parent per
second of wall time, after a warm-up, over ``--seconds``.

* ``sslax``: sslax's own host pipeline (``sslax.data.pipeline.train_batches`` with the SimCLR
  recipe's host crops), with DCT-domain downscaling (``views_per_s``, the default) and
  without (``exact_views_per_s``: every pixel as torchvision computes it).
* peer: torchvision's SimCLR host path, ``ImageFolder`` + ``RandomResizedCrop(224)`` +
  ``RandomHorizontalFlip`` applied twice per image, run by workers that each build whole
  batches, as ``torch.utils.data.DataLoader`` workers do. torchvision's own transforms run
  when it imports; otherwise a PIL twin of exactly its PIL code path (see ``PilImageFolder``).

``--make_folder=COUNT`` first writes COUNT synthetic photos at PATH when PATH does not exist;
``--train_steps=N`` also runs the main command on the folder for N steps (training images/s and
the share of the step spent waiting for input); ``--index_files=N`` also times indexing a
folder of N files, first and cached.
Writes ``DIR/data.json`` and prints one summary line. A benchmark: nothing asserts a speed.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import multiprocessing
import os
import pathlib
import platform
import queue
import random
import shutil
import sys
import time
from multiprocessing import shared_memory

import numpy as np
import PIL
from PIL import Image, features

SIZE = 224
BATCH = 64
VIEWS = 2
SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
# torchvision's IMG_EXTENSIONS: what ImageFolder lists.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# Batches each worker may have finished ahead of the parent (DataLoader's prefetch_factor).
PREFETCH = 2


# --- the synthetic folder ---------------------------------------------------------------------


def synthetic_photo(rng: np.random.Generator, sides: tuple[int, int]) -> Image.Image:
    """A photo-sized image whose JPEG costs about what a photo costs to store and decode.

    Flat or purely random content would make decoding unrealistically cheap or dear: a smooth
    colour field (a coarse random grid, upsampled) gives low-frequency structure, and a little
    Gaussian noise gives the high-frequency detail that fills a photo's JPEG (about 100 KB at
    quality 90 for the sizes below, ImageNet's typical range).
    """
    width, height = (int(s) for s in rng.integers(sides[0], sides[1] + 1, size=2))
    cells = int(rng.integers(4, 33))
    grid = Image.fromarray(rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8))
    field = np.asarray(grid.resize((width, height), Image.Resampling.BICUBIC), np.float32)
    noisy = field + rng.normal(0.0, 6.0, field.shape).astype(np.float32)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def make_folder(
    root: str | os.PathLike,
    *,
    train: int = 1000,
    validation: int = 0,
    classes: int = 10,
    seed: int = 0,
    sides: tuple[int, int] = (333, 800),
) -> pathlib.Path:
    """Write ``root/<split>/<class>/<class>_<i>.JPEG`` (ImageFolder's layout), quality 90.

    Width and height are drawn independently from ``sides``, as ImageNet's photos vary in both.
    Image i of a split depends only on (seed, split, i), so a folder is the same whatever
    the counts around it. The folder is built next to ``root`` and renamed into place, so an
    interrupted run never leaves a half-written folder that a later run would take as done.
    """
    root = pathlib.Path(root)
    if root.exists():
        raise FileExistsError(root)
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    names = [f"n{c:08d}" for c in range(classes)]
    for split_id, (split, count) in enumerate([("train", train), ("validation", validation)]):
        for i in range(count):
            rng = np.random.default_rng([seed, split_id, i])
            name = names[i % classes]
            path = partial / split / name / f"{name}_{i}.JPEG"
            # Only classes that get an image exist: ImageFolder refuses empty class folders.
            path.parent.mkdir(parents=True, exist_ok=True)
            synthetic_photo(rng, sides).save(path, "JPEG", quality=90)
    partial.rename(root)
    return root


def image_root(folder: str | os.PathLike) -> pathlib.Path:
    """The ImageFolder root to read: the train split of an ImageNet-like folder, else itself."""
    folder = pathlib.Path(folder)
    return folder / "train" if (folder / "train").is_dir() else folder


def find_samples(root: str | os.PathLike) -> list[tuple[str, int]]:
    """(path, class index) as ImageFolder lists them: sorted classes, sorted files in each."""
    root = pathlib.Path(root)
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    samples = []
    for label, name in enumerate(classes):
        for dirpath, _, files in sorted(os.walk(root / name, followlinks=True)):
            for file in sorted(files):
                if file.lower().endswith(IMG_EXTENSIONS):
                    samples.append((os.path.join(dirpath, file), label))
    return samples


def describe_folder(root: pathlib.Path) -> dict:
    """What the numbers depend on: how many images, how large on disk and in pixels."""
    paths = [path for path, _ in find_samples(root)]
    pixels = []
    for path in paths:
        with Image.open(path) as img:  # reads the header only
            pixels.append(img.width * img.height)
    return {
        "images": len(paths),
        "mean_file_kb": float(np.mean([os.path.getsize(p) for p in paths]) / 1e3),
        "mean_pixels": float(np.mean(pixels)),
    }


# --- the peer: torchvision's SimCLR host path ---------------------------------------------------


def crop_params(
    rng: random.Random, height: int, width: int, scale=SCALE, ratio=RATIO
) -> tuple[int, int, int, int]:
    """(top, left, h, w): torchvision's ``RandomResizedCrop.get_params``, with Python's RNG.

    Ten tries of an area fraction uniform in ``scale`` and an aspect ratio log-uniform in
    ``ratio``; a try that fits the image is placed uniformly (bounds inclusive, like
    ``torch.randint(0, H - h + 1)``). Failing that, the largest centred box in ``ratio``.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        w, h = round(height * max(ratio)), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def pil_view(rng: random.Random, img: Image.Image) -> Image.Image:
    """RandomResizedCrop(224) then RandomHorizontalFlip(), as torchvision runs them on PIL.

    ``F.resized_crop`` is ``crop`` then ``resize``: ``img.crop(box)`` and
    ``img.resize((224, 224), BILINEAR)``. PIL always antialiases a bilinear downscale, so
    torchvision's ``antialias`` flag changes nothing here. (``resize(..., box=...)`` would skip
    the crop's copy but let the filter read pixels outside the box: not torchvision's result.)
    """
    top, left, h, w = crop_params(rng, img.height, img.width)
    img = img.crop((left, top, left + w, top + h)).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img


class PilImageFolder:
    """``ImageFolder(root, transform=two views)`` without torchvision: same listing, loader, ops."""

    def __init__(self, root: pathlib.Path, seed: int):
        self.samples = find_samples(root)
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        path, label = self.samples[index]
        with open(path, "rb") as f:  # torchvision's pil_loader
            img = Image.open(f).convert("RGB")
        return np.stack([np.asarray(pil_view(self.rng, img)) for _ in range(VIEWS)]), label


def torchvision_folder(root: pathlib.Path, seed: int):
    """torchvision's own ImageFolder and transforms; the worker's torch RNG seeded as DataLoader
    seeds each worker (without it, every spawned worker would draw the same crops)."""
    import torch
    from torchvision import datasets, transforms

    torch.manual_seed(seed)
    torch.set_num_threads(1)  # as in a DataLoader worker
    view = transforms.Compose(
        [transforms.RandomResizedCrop(SIZE), transforms.RandomHorizontalFlip()]
    )
    return datasets.ImageFolder(
        str(root), transform=lambda img: np.stack([np.asarray(view(img)) for _ in range(VIEWS)])
    )


def peer_name() -> str:
    try:
        import torchvision
    except ImportError:
        return "PIL re-implementation of torchvision's ops"
    return "torchvision " + ".".join(torchvision.__version__.split(".")[:2])


def batch_indices(step: int, size: int, batch: int, seed: int) -> list[int]:
    """Indices of batch ``step`` of an endless run of shuffled epochs, sliced into batches.

    Endless, so that epoch ends (and a DataLoader's worker restarts) never enter the timing.
    """
    positions = range(step * batch, (step + 1) * batch)
    orders = {}
    for position in positions:
        epoch = position // size
        if epoch not in orders:
            orders[epoch] = np.random.default_rng([seed, epoch]).permutation(size)
    return [int(orders[p // size][p % size]) for p in positions]


def free_slot(free, stop) -> int | None:
    """A batch buffer the parent has handed back, or None once the run is over."""
    while not stop.is_set():
        try:
            return free.get(timeout=0.1)
        except queue.Empty:
            pass
    return None


def peer_worker(root, worker, workers, batch, seed, names, free, results, stop) -> None:
    """One DataLoader-style worker: every ``workers``-th batch, stacked straight into a
    shared-memory buffer (as DataLoader's collate does in a worker); only its number and the
    labels travel back through the pipe."""
    dataset = (
        torchvision_folder(root, seed + worker)
        if peer_name().startswith("torchvision")
        else PilImageFolder(root, seed + worker)
    )
    blocks = [shared_memory.SharedMemory(name) for name in names]
    buffers = [np.ndarray((batch, VIEWS, SIZE, SIZE, 3), np.uint8, buffer=b.buf) for b in blocks]
    try:
        for step in itertools.count(worker, workers):
            slot = free_slot(free, stop)
            if slot is None:
                return
            items = [dataset[i] for i in batch_indices(step, len(dataset), batch, seed)]
            np.stack([views for views, _ in items], out=buffers[slot])
            results.put((slot, np.array([label for _, label in items])))
    finally:
        del buffers  # a block cannot close while arrays still point into it
        for block in blocks:
            block.close()


def next_batch(results, procs) -> tuple[int, np.ndarray]:
    """The next delivered (slot, labels); a dead worker raises here instead of hanging the run."""
    while True:
        try:
            return results.get(timeout=1.0)
        except queue.Empty:
            dead = [proc.exitcode for proc in procs if proc.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a peer worker exited with code {dead[0]}") from None


def cpu_seconds(pids) -> float | None:
    """CPU time (user + system) the processes have used so far; None off Linux."""
    try:
        fields = [
            pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split() for pid in pids
        ]
    except OSError:
        return None
    return sum(int(f[11]) + int(f[12]) for f in fields) / os.sysconf("SC_CLK_TCK")


def peer_views_per_s(root: pathlib.Path, workers: int, seconds: float, batch: int = BATCH) -> dict:
    """Views per second that ``workers`` processes deliver to this one, after a warm-up.

    Delivery is DataLoader's: each batch lands in shared memory that this process reads in
    place. (Pickling 19 MB batches through a pipe instead cost this process 33 ms of CPU per
    batch of 64 on a 2-core machine, where making the batch takes about 250 ms.) ``PREFETCH``
    buffers per worker bound how far workers run ahead, like ``prefetch_factor``.

    The warm-up is the first two batches per worker (process start, imports, first reads);
    timing then runs from the last warm-up batch to the first arrival past ``seconds``, and
    the CPU time this process and the workers spend meanwhile is recorded too. Workers are
    spawned, so nothing this process has imported (JAX, for the sslax side) is forked into
    them.
    """
    context = multiprocessing.get_context("spawn")
    nbytes = batch * VIEWS * SIZE * SIZE * 3
    blocks = [
        shared_memory.SharedMemory(create=True, size=nbytes) for _ in range(PREFETCH * workers)
    ]
    free, results, stop = context.Queue(), context.Queue(), context.Event()
    for slot in range(len(blocks)):
        free.put(slot)
    names = [block.name for block in blocks]
    procs = [
        context.Process(
            target=peer_worker,
            args=(str(root), w, workers, batch, 0, names, free, results, stop),
            daemon=True,
        )
        for w in range(workers)
    ]
    for proc in procs:
        proc.start()
    try:
        warmup = 2 * workers
        for _ in range(warmup):
            slot, labels = next_batch(results, procs)
            views = np.ndarray((batch, VIEWS, SIZE, SIZE, 3), np.uint8, buffer=blocks[slot].buf)
            assert views.any() and labels.shape == (batch,)  # a real batch arrived
            del views
            free.put(slot)
        timing = time_batches(
            lambda: free.put(next_batch(results, procs)[0]),  # a trainer would have copied it
            [os.getpid()] + [proc.pid for proc in procs],
            seconds,
        )
    finally:
        stop.set()
        for proc in procs:
            proc.join()
        for block in blocks:
            block.close()
            block.unlink()
    return rate_of(timing, batch, warmup)


def time_batches(take, pids, seconds: float) -> tuple[int, float, float | None]:
    """Calls ``take()`` (one batch) until ``seconds`` have passed: (batches, wall seconds, CPU
    seconds of ``pids`` meanwhile, None off Linux)."""
    cpu_start = cpu_seconds(pids)
    start = now = time.perf_counter()
    timed = 0
    while now - start < seconds:
        take()
        timed += 1
        now = time.perf_counter()
    cpu = None if cpu_start is None else cpu_seconds(pids) - cpu_start
    return timed, now - start, cpu


def rate_of(timing: tuple[int, float, float | None], batch: int, warmup: int) -> dict:
    timed, wall, cpu = timing
    views = timed * batch * VIEWS
    return {
        "views_per_s": views / wall,
        # Robust to other jobs on the machine: what the views cost, not how fast they came.
        "cpu_s": cpu,
        "views_per_cpu_s": None if not cpu else views / cpu,
        "timed_batches": timed,
        "warmup_batches": warmup,
        "timed_s": wall,
    }


# --- the sslax side ------------------------------------------------------------------------------


def sslax_views_per_s(
    folder, workers: int, seconds: float, batch: int = BATCH, dct_downscale: bool = True
) -> dict:
    """sslax's host pipeline on the same images (``folder``: the ImageFolder root both sides
    read), same ``workers``, batches of ``batch``: ``pipeline.train_batches`` with the SimCLR
    recipe's host crops, timed like the peer (warm-up, then views reaching this process)."""
    from sslax import augment
    from sslax.data import images, pipeline

    root = pathlib.Path(folder)
    source = pipeline.get_source(f"folder:{root.parent}", root.name, image_size=SIZE)
    crops = images.TrainCrops.for_recipe(augment.simclr_recipe(SIZE), 0, dct_downscale)
    batches = pipeline.train_batches(
        source,
        global_batch_size=batch,
        seed=0,
        start_step=0,
        end_step=10**9,
        crops=crops,
        workers=workers,
    )
    try:
        warmup = 2 * max(workers, 1)
        for _ in range(warmup):
            first = next(batches)
        assert first["crops_224"].shape == (batch, VIEWS, SIZE, SIZE, 3)
        pids = [os.getpid()] + [child.pid for child in multiprocessing.active_children()]
        timing = time_batches(lambda: next(batches), pids, seconds)
    finally:
        pipeline.close(batches)
    return {**rate_of(timing, batch, warmup), "dct_downscale": dct_downscale}


def index_speed(count: int, classes: int = 1000) -> dict:
    """Seconds to index a folder of ``count`` (empty) files in ``classes`` class folders, the
    first time and from the cache, with sslax's folder dataset."""
    import tempfile

    from sslax.data import folder as folders

    with tempfile.TemporaryDirectory() as tmp:
        saved = os.environ.get("SSLAX_CACHE")
        os.environ["SSLAX_CACHE"] = os.path.join(tmp, "cache")
        for c in range(classes):
            class_dir = os.path.join(tmp, "data", "train", f"n{c:08d}")
            os.makedirs(class_dir)
            for i in range(c, count, classes):
                open(os.path.join(class_dir, f"n{c:08d}_{i}.JPEG"), "wb").close()
        timings = {}
        for name in ("first_s", "cached_s"):
            start = time.perf_counter()
            split = folders.index_split(os.path.join(tmp, "data"), "train")
            timings[name] = time.perf_counter() - start
        assert len(split) == count
        if saved is None:
            del os.environ["SSLAX_CACHE"]
        else:
            os.environ["SSLAX_CACHE"] = saved
    return {"files": count, **timings}


def train_throughput(folder, steps: int, workers: int) -> dict:
    """The main command on the folder (SimCLR, ResNet-18 x 0.25 at 64 px, batch 64): training
    images/s and the share of the step spent waiting for input, from its results.json."""
    import subprocess
    import tempfile

    root = pathlib.Path(folder)
    with tempfile.TemporaryDirectory() as workdir:
        command = [
            sys.executable,
            "-m",
            "sslax.train",
            f"--config.dataset=folder:{root.parent}",
            f"--config.train_split={root.name}",
            f"--config.eval_split={root.name}",
            "--config.image_size=64",
            "--config.batch_size=64",
            f"--config.total_steps={steps}",
            f"--config.log_every={max(steps // 4, 1)}",
            f"--config.data_workers={workers}",
            "--config.knn_train_examples=256",
            "--config.knn_test_examples=128",
            "--config.diagnostics_examples=64",
            f"--workdir={workdir}/run",
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"the training run failed: {done.stderr[-2000:]}")
        results = json.loads(pathlib.Path(workdir, "run", "results.json").read_text())
    return {
        key: results[key]
        for key in ("images_per_s", "input_wait_share", "skipped_images", "steps", "batch_size")
    }


# --- the run -------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--folder", required=True, help="ImageNet-like folder (or ImageFolder root)"
    )
    parser.add_argument("--workers", type=int, required=True, help="worker processes, each side")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds, each side")
    parser.add_argument("--out", required=True, help="folder for data.json")
    parser.add_argument(
        "--make_folder",
        type=int,
        default=0,
        metavar="COUNT",
        help="first write COUNT synthetic train images at --folder if it is absent",
    )
    parser.add_argument("--batch", type=int, default=BATCH, help="images per delivered batch")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per side")
    parser.add_argument(
        "--train_steps", type=int, default=0, help="also time this many steps of the main command"
    )
    parser.add_argument(
        "--index_files", type=int, default=0, help="also time indexing a folder of this many files"
    )
    return parser.parse_args(argv)


def median_round(runs: list[dict]) -> dict:
    """The run with the median views/s (the lower middle one for an even count)."""
    return sorted(runs, key=lambda r: r["views_per_s"])[(len(runs) - 1) // 2]


def per_worker(rate: float | None, workers: int) -> float | None:
    return None if rate is None else rate / workers


def main(argv=None) -> dict:
    args = parse_args(argv)
    record = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    if args.make_folder and not os.path.exists(args.folder):
        start = time.perf_counter()
        make_folder(args.folder, train=args.make_folder)
        record["make_folder_s"] = time.perf_counter() - start
    root = image_root(args.folder)
    record.update(describe_folder(root))
    record.update(
        folder=str(root),
        workers=args.workers,
        seconds=args.seconds,
        rounds=args.rounds,
        batch=args.batch,
        cpu_count=os.cpu_count(),
        cpus_usable=len(os.sched_getaffinity(0)),
        processor=platform.processor() or platform.machine(),
        python=platform.python_version(),
        pillow=PIL.__version__,
        libjpeg_turbo=features.check_feature("libjpeg_turbo"),
        # Other jobs share this machine's cores; the load says how much they took.
        loadavg_before=os.getloadavg()[0],
        peer=peer_name(),
    )
    # The peer first: its workers are spawned, but its parent should not compete with threads
    # that the sslax side may leave behind.
    # Rounds alternate the sides, so that other jobs on a shared machine slow both alike; each
    # side's record is its median round.
    rounds = {"peer": [], "sslax": [], "exact": []}
    for _ in range(args.rounds):
        rounds["peer"].append(peer_views_per_s(root, args.workers, args.seconds, args.batch))
        rounds["sslax"].append(sslax_views_per_s(root, args.workers, args.seconds, args.batch))
        # The same without DCT-domain downscaling: every pixel as torchvision computes it.
        rounds["exact"].append(
            sslax_views_per_s(root, args.workers, args.seconds, args.batch, dct_downscale=False)
        )
    peer, sslax, exact = (median_round(rounds[side]) for side in ("peer", "sslax", "exact"))
    record["rounds"] = {side: [r["views_per_s"] for r in runs] for side, runs in rounds.items()}
    rate = sslax["views_per_s"]
    if args.train_steps:
        record["train"] = train_throughput(root, args.train_steps, args.workers)
    if args.index_files:
        record["index"] = index_speed(args.index_files)
    record.update(
        views_per_s=rate,
        peer_views_per_s=peer["views_per_s"],
        views_per_s_per_worker=per_worker(rate, args.workers),
        peer_views_per_s_per_worker=per_worker(peer["views_per_s"], args.workers),
        peer_views_per_cpu_s=peer["views_per_cpu_s"],
        views_per_cpu_s=sslax["views_per_cpu_s"],
        ratio=rate / peer["views_per_s"],
        exact_views_per_s=exact["views_per_s"],
        exact_ratio=exact["views_per_s"] / peer["views_per_s"],
        sslax_details=sslax,
        exact_details=exact,
        peer_details=peer,
        loadavg_after=os.getloadavg()[0],
    )
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data.json").write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"data: sslax {rate:,.0f} views/s ({exact['views_per_s']:,.0f} without DCT "
        f"downscaling), peer {peer['views_per_s']:,.0f} views/s "
        f"({record['peer']}; {peer['views_per_cpu_s'] or 0:,.0f} per CPU-second), "
        f"{args.workers} worker(s), {record['images']} images of "
        f"{record['mean_file_kb']:.0f} KB / {record['mean_pixels'] / 1e6:.2f} MP, "
        f"load {record['loadavg_before']:.1f} -> {record['loadavg_after']:.1f}",
        flush=True,
    )
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
