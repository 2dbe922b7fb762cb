"""The README's "Planning a pod run" table: real `python -m sslax.plan` runs, then the table.

    python experiments/plan_table.py run [--out=experiments/results/plans] [--only=REGEX] [--jobs=2]
    python experiments/plan_table.py table [--out=experiments/results/plans]

``run`` compiles every case below that has no ``OUT/CASE/plan.json`` yet, one
``python -m sslax.plan`` child per case (TPU cases need ``sslax[tpu]``, GPU cases ``sslax[gpu]``,
both in the Python running this); ``table`` prints the Markdown table from the plan.json files.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import pathlib
import re
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "experiments" / "configs"
METHODS = ("simclr", "moco_v2", "moco_v3", "byol", "simsiam", "barlow_twins", "vicreg", "dino")
# Two slice sizes of TPU v5e (8 and 16 chips) and one and two nodes of 8 H200s. Larger slices
# compile too (v5e:8x8 in 9 minutes here against 2.5 for v5e:4x4).
TOPOLOGIES = ("v5e:4x4", "h200:8", "h200:2x8", "v5e:2x4")


def cases() -> dict[str, tuple[str, tuple[str, ...], str]]:
    """name -> (config file, overrides, topology)."""
    out = {}
    for topology in TOPOLOGIES[:2]:
        for method in METHODS:
            out[f"{method}_{topology}"] = (f"{method}_imagenet.py", (), topology)
    out["simclr_v5e:8x8"] = ("simclr_imagenet.py", (), "v5e:8x8")  # 64 chips
    # SimCLR's batch sizes: Table B.1's largest (8192) and the paper's largest (32768).
    for batch, topologies in ((8192, ("v5e:4x4", "h200:2x8")), (32768, ("v5e:4x4", "h200:2x8"))):
        for topology in topologies:
            out[f"simclr_b{batch}_{topology}"] = (
                "simclr_imagenet.py",
                (f"--config.batch_size={batch}",),
                topology,
            )
    out["simclr_b32768_remat_h200:2x8"] = (
        "simclr_imagenet.py",
        ("--config.batch_size=32768", "--config.remat=blocks"),
        "h200:2x8",
    )
    # DINO with ViT-B/16 (the dino config's default is ViT-S/16).
    for topology in ("v5e:4x4", "h200:8"):
        out[f"dino_vitb16_{topology}"] = (
            "dino_imagenet.py",
            ("--config.model=vit_base",),
            topology,
        )
    for topology in TOPOLOGIES[2:]:
        for method in METHODS:
            out[f"{method}_{topology}"] = (f"{method}_imagenet.py", (), topology)
    return out


def _run_one(name: str, spec, out: pathlib.Path) -> str:
    config, overrides, topology = spec
    folder = out / name.replace(":", "-")
    folder.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "sslax.plan",
        f"--config={CONFIGS / config}",
        *overrides,
        f"--topology={topology}",
        f"--out={folder}",
    ]
    start = time.time()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    (folder / "log.txt").write_text(done.stdout + done.stderr)
    return f"{name}: exit {done.returncode} in {time.time() - start:.0f} s"


def run(out: pathlib.Path, only: str, jobs: int) -> None:
    todo = {
        name: spec
        for name, spec in cases().items()
        if re.search(only, name) and not (out / name.replace(":", "-") / "plan.json").exists()
    }
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        for line in pool.map(lambda item: _run_one(*item, out), todo.items()):
            print(line, flush=True)


def _mib(n) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f}"


def _gib(n) -> str:
    return "-" if n is None else f"{n / 2**30:.1f}"


def row(name: str, plan: dict) -> str:
    memory, coll = plan["memory"], plan["collectives"]
    fits = {True: "yes", False: "**no**", None: "-"}[memory.get("fits")]
    moved = coll["all-to-all"]["bytes_per_device"] + coll["collective-permute"]["bytes_per_device"]
    reduced = coll["all-reduce"]["bytes_per_device"] + coll["reduce-scatter"]["bytes_per_device"]
    gathered = coll["all-gather"]["bytes_per_device"]
    if plan.get("compile_s") is None:  # the compiler refused it (out of memory): no program
        moved = reduced = gathered = None
    flops = plan.get("flops_per_step")
    ceiling = plan.get("images_per_s_ceiling")
    cfg = plan["config"]
    what = f"{cfg['method']} {cfg['model']} b{cfg['batch_size']}"
    if cfg.get("remat") not in (None, "none"):
        what += f" remat={cfg['remat']}"
    return (
        f"| {what} | {plan['topology']} | {plan['per_device_batch']} | {fits} | "
        f"{_gib(memory.get('peak_bytes'))} / {_gib(memory.get('usable_bytes'))} | "
        f"{'-' if flops is None else f'{flops / 1e12:,.0f}'} | "
        f"{_mib(reduced)} | {_mib(gathered)} | {_mib(moved)} | "
        f"{'-' if ceiling is None else f'{ceiling:,.0f}'} |"
    )


def table(out: pathlib.Path) -> None:
    print(
        "| config | topology | batch per chip | fits | peak / usable GiB per chip | TFLOP per step "
        "| all-reduce + reduce-scatter MiB/chip | all-gather MiB/chip "
        "| all-to-all + permute MiB/chip | roofline images/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in cases():
        path = out / name.replace(":", "-") / "plan.json"
        if path.exists():
            print(row(name, json.loads(path.read_text())))
        else:
            print(f"| {name} | (no plan: see {path.parent / 'log.txt'}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("run", "table"))
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "experiments/results/plans")
    parser.add_argument("--only", default="", help="regex of case names to run")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    if args.command == "run":
        run(args.out, args.only, args.jobs)
    else:
        table(args.out)


if __name__ == "__main__":
    main()
