"""Runs every method's default config on the built-in data and prints README's methods table.

    python experiments/methods_table.py --out=runs/methods [--methods=simclr,byol] [--reuse]

Each method runs `python -m sslax.train --config=experiments/configs/NAME.py` in its own workdir
under --out; --reuse skips methods whose workdir already holds results.json. The table lists
kNN top-1 on the held-out split for the pretrained and the randomly initialised network, the
steps, and the wall time, as measured by the runs themselves.
"""

import argparse
import json
import pathlib
import subprocess
import sys

from sslax import methods

CONFIGS = pathlib.Path(__file__).resolve().parent / "configs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--methods", default=",".join(methods.METHODS))
    parser.add_argument("--reuse", action="store_true")
    args = parser.parse_args()

    rows = []
    for name in args.methods.split(","):
        if name not in methods.METHODS:
            sys.exit(f"unknown method {name!r}; choose from {', '.join(methods.METHODS)}")
        workdir = args.out / name
        results_path = workdir / "results.json"
        if not (args.reuse and results_path.exists()):
            config = CONFIGS / f"{name}.py"
            print(f"== {name}: {config}", flush=True)
            subprocess.run(
                [sys.executable, "-m", "sslax.train", f"--config={config}", f"--workdir={workdir}"],
                check=True,
            )
        results = json.loads(results_path.read_text())
        rows.append(
            f"| {name} | `experiments/configs/{name}.py` | {results['steps']} | "
            f"{results['knn_top1']:.3f} | {results['knn_top1_random_init']:.3f} | "
            f"{results['wall_time_s'] / 60:.1f} min |"
        )
    print("| method | config | steps | kNN top-1 | random init | wall time |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
