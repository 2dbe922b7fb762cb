"""SimCLR Table B.1: ImageNet linear top-1 of ResNet-50 over batch size x epochs x LR scaling.

The sweep is 48 pretraining runs of ``experiments/configs/simclr_imagenet.py``, one per cell:
batch 256, 512, 1024, 2048, 4096, 8192 x epochs 100, 200, 400, 800 x learning-rate scaling
"linear" (0.3 x B/256) and "sqrt" (0.075 x sqrt(B)), each with 10 warm-up epochs then cosine.
Each cell is one run in its own workdir ``ROOT/NAME`` (e.g. ``ROOT/b0256-e100-linear``); the
paper's numbers (Chen et al. 2020, Table B.1, as in REFERENCES.md) are data here, in ``PAPER``.

    python experiments/simclr_table_b1.py list --root=ROOT          # NAME<TAB>flags, 48 lines
    python experiments/simclr_table_b1.py flags INDEX --root=ROOT   # one cell's flags, 0..47
    python experiments/simclr_table_b1.py collect --root=ROOT [--markdown] [--json=PATH]

Flags are printed shell-quoted on one line (``shlex.join``); a script reads them with
``eval "flags=($(python experiments/simclr_table_b1.py flags 7 --root=ROOT))"``. They hold a
relative config path, so run them from the repository root. ``list`` and ``flags`` need only
the Python standard library. ``collect`` reads ``ROOT/NAME/results.json`` of every cell and
prints ours beside the paper's, rows batch and columns epochs as in the paper, each cell
"linear / sqrt"; it uses ``linear_top1`` and, for runs that have none, ``knn_top1`` marked
``k`` (a kNN number, not comparable to the paper's linear evaluation), and ``-`` for cells
without results.json. It also writes the collected numbers to ``ROOT/table_b1.json`` (or
``--json=PATH``); a gs:// root is read through ``sslax.paths`` (etils.epath over gcsfs).

Cost. Every (batch, scaling) pair runs 100 + 200 + 400 + 800 = 1,500 epochs, so the table is
18,000 ImageNet epochs, 2.3e10 images of two 224 px views each; the longest cell is 800 epochs
(1.0e9 images). Rough, unmeasured estimate from REFERENCES.md's supervised ResNet-50
throughputs halved for the two views: ~1,200 images/s per A100, i.e. ~5,300 A100-hours for the
table (~30 h for one 800-epoch cell on 8 A100s); a TPU v3-8 at ~4,000 images/s needs ~1,600
h. Small batches use large machines poorly (batch 256 on 64 devices is 4 images each), so run
them on fewer devices. Each run resumes from its newest checkpoint (every 10 epochs) when
started again in the same workdir.

Fanning it out (ROOT must be visible to every host of a run; see launch/):

    # SLURM: one array task per cell, each on 4 nodes x 8 GPUs, at most 4 cells at a time
    SWEEP=experiments/simclr_table_b1.py SWEEP_ROOT=/shared/runs/table_b1 \\
        sbatch --array=0-47%4 --nodes=4 launch/slurm.sbatch
    # A TPU pod slice: the cells one after another on every worker
    launch/tpu_pod.sh my-pod us-central2-b --sweep=experiments/simclr_table_b1.py \\
        --root=gs://my-bucket/runs/table_b1
    # One machine, one cell after another
    for i in $(seq 0 47); do
      eval "python -m sslax.train $(python experiments/simclr_table_b1.py flags $i --root=R)"
    done

>>> len(CELLS), CELLS[0].name, CELLS[-1].name
(48, 'b0256-e100-linear', 'b8192-e800-sqrt')
>>> CELLS[1].flags("runs/b1")
['--config=experiments/configs/simclr_imagenet.py:batch_size=256,epochs=100,lr_scaling=sqrt', \
'--workdir=runs/b1/b0256-e100-sqrt']
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import shlex
import signal
import sys

CONFIG = "experiments/configs/simclr_imagenet.py"
BATCH_SIZES = (256, 512, 1024, 2048, 4096, 8192)
EPOCHS = (100, 200, 400, 800)
LR_SCALINGS = ("linear", "sqrt")
IMAGENET_TRAIN_IMAGES = 1_281_167  # sslax.configs.IMAGENET_TRAIN_IMAGES (a test checks)

# Chen et al. 2020, Table B.1 (REFERENCES.md): linear top-1 (%), (linear, sqrt) LR scaling.
PAPER = {
    256: {100: (57.5, 62.8), 200: (61.9, 64.3), 400: (64.7, 65.7), 800: (66.6, 66.5)},
    512: {100: (60.7, 63.8), 200: (64.0, 65.6), 400: (66.2, 66.7), 800: (67.8, 67.4)},
    1024: {100: (62.8, 64.3), 200: (65.3, 66.1), 400: (67.2, 67.2), 800: (68.5, 68.3)},
    2048: {100: (64.0, 64.7), 200: (66.1, 66.8), 400: (68.1, 67.9), 800: (68.9, 68.8)},
    4096: {100: (64.6, 64.5), 200: (66.5, 66.8), 400: (68.2, 68.0), 800: (68.9, 69.1)},
    8192: {100: (64.8, 64.8), 200: (66.6, 67.0), 400: (67.8, 68.3), 800: (69.0, 69.1)},
}


@dataclasses.dataclass(frozen=True)
class Cell:
    batch_size: int
    epochs: int
    lr_scaling: str

    @property
    def name(self) -> str:
        return f"b{self.batch_size:04d}-e{self.epochs}-{self.lr_scaling}"

    @property
    def steps(self) -> int:
        return self.epochs * (IMAGENET_TRAIN_IMAGES // self.batch_size)

    @property
    def paper_top1(self) -> float:
        return PAPER[self.batch_size][self.epochs][LR_SCALINGS.index(self.lr_scaling)]

    def workdir(self, root: str) -> str:
        # Plain string joining: pathlib would turn "gs://bucket" into "gs:/bucket".
        return f"{root.rstrip('/')}/{self.name}"

    def flags(self, root: str) -> list[str]:
        arg = f"batch_size={self.batch_size},epochs={self.epochs},lr_scaling={self.lr_scaling}"
        return [f"--config={CONFIG}:{arg}", f"--workdir={self.workdir(root)}"]


# Index order (for job arrays): batch, then epochs, then scaling.
CELLS = tuple(Cell(b, e, s) for b in BATCH_SIZES for e in EPOCHS for s in LR_SCALINGS)


# ---------------------------------------------------------------------------------------------
# collect


def _read_text(path: str) -> str | None:
    """The file's text, or None when it does not exist; local or gs:// (sslax.paths)."""
    from sslax import paths  # here: `list` and `flags` run where sslax is not installed

    p = paths.resolve(path)
    return p.read_text() if p.exists() else None


def _write_text(path: str, text: str) -> None:
    from sslax import paths

    paths.write_text(paths.resolve(path), text)


def collect(root: str) -> list[dict]:
    """One record per cell: the paper's number and ours, from ROOT/NAME/results.json."""
    records = []
    for index, cell in enumerate(CELLS):
        record = {
            "index": index,
            "name": cell.name,
            "batch_size": cell.batch_size,
            "epochs": cell.epochs,
            "lr_scaling": cell.lr_scaling,
            "paper_top1": cell.paper_top1,
            "top1": None,  # percent
            "metric": None,  # "linear", "knn", or None (no results.json or no top-1 in it)
            "results": None,  # "found", "missing", "unreadable"
            "matches_cell": None,  # the run's batch size and steps are this cell's
        }
        path = f"{cell.workdir(root)}/results.json"
        try:
            text = _read_text(path)
        except OSError as e:
            text, record["results"] = None, "unreadable"
            print(f"warning: cannot read {path}: {e}", file=sys.stderr)
        if text is not None:
            try:
                results = json.loads(text)
            except json.JSONDecodeError as e:
                results, record["results"] = {}, "unreadable"
                print(f"warning: {path} is not JSON: {e}", file=sys.stderr)
            else:
                record["results"] = "found"
            for key, metric in (("linear_top1", "linear"), ("knn_top1", "knn")):
                if isinstance(results.get(key), (int, float)):
                    record["top1"], record["metric"] = round(100 * results[key], 2), metric
                    break
            if "batch_size" in results and "steps" in results:
                record["matches_cell"] = (results["batch_size"], results["steps"]) == (
                    cell.batch_size,
                    cell.steps,
                )
        elif record["results"] is None:
            record["results"] = "missing"
        records.append(record)
    return records


def _ours(record: dict) -> str:
    if record["top1"] is None:
        return "-" if record["results"] == "missing" else "?"
    text = f"{'k' if record['metric'] == 'knn' else ''}{record['top1']:.1f}"
    return text + ("*" if record["matches_cell"] is False else "")


def format_table(records: list[dict], *, markdown: bool = False) -> str:
    """The paper's layout: rows batch, columns epochs, cells "ours L / S  (paper L / S)"."""
    by_key = {(r["batch_size"], r["epochs"], r["lr_scaling"]): r for r in records}
    header = ["batch"] + [f"{e} epochs" for e in EPOCHS]
    rows = []
    for b in BATCH_SIZES:
        row = [str(b)]
        for e in EPOCHS:
            linear, sqrt = by_key[b, e, "linear"], by_key[b, e, "sqrt"]
            row.append(
                f"ours {_ours(linear)} / {_ours(sqrt)}  "
                f"(paper {linear['paper_top1']:.1f} / {sqrt['paper_top1']:.1f})"
            )
        rows.append(row)

    title = (
        "SimCLR Table B.1: ImageNet top-1 (%), ResNet-50; each cell linear / sqrt LR scaling, "
        "ours beside the paper's linear evaluation"
    )
    if markdown:
        lines = [title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    else:
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = [title, ""] + [
            "  ".join(
                cell.rjust(w) if i == 0 else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(r, widths))
            ).rstrip()
            for r in [header, *rows]
        ]

    n_linear = sum(r["metric"] == "linear" for r in records)
    n_knn = sum(r["metric"] == "knn" for r in records)
    notes = [
        f"{n_linear + n_knn} of {len(records)} cells have a result "
        f"({n_linear} linear evaluation, {n_knn} kNN only)."
    ]
    if n_knn:
        notes.append(
            "k: kNN top-1 (results.json has no linear_top1); not comparable to the paper's "
            "linear evaluation."
        )
    if any(r["results"] == "missing" for r in records):
        notes.append("-: no results.json in the cell's workdir yet.")
    if any(r["results"] != "missing" and r["top1"] is None for r in records):
        notes.append("?: results.json unreadable or without linear_top1 / knn_top1.")
    if any(r["matches_cell"] is False for r in records):
        notes.append("*: the run's batch size or steps differ from the cell's (overridden flags?).")
    return "\n".join(lines + [""] + notes)


# ---------------------------------------------------------------------------------------------
# command line


def _index(text: str) -> int:
    try:
        index = int(text)
    except ValueError:
        index = -1
    if not 0 <= index < len(CELLS):
        raise argparse.ArgumentTypeError(
            f"cell index must be an integer in 0..{len(CELLS) - 1}, got {text!r}"
        )
    return index


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="simclr_table_b1.py", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    root_help = "sweep root; cell workdirs are ROOT/NAME (a shared filesystem or gs://...)"

    list_parser = commands.add_parser("list", help="NAME<TAB>flags of every cell, in index order")
    list_parser.add_argument("--root", required=True, help=root_help)

    flags_parser = commands.add_parser("flags", help="the train flags of one cell (job arrays)")
    flags_parser.add_argument("index", type=_index, help=f"cell index, 0..{len(CELLS) - 1}")
    flags_parser.add_argument("--root", required=True, help=root_help)

    collect_parser = commands.add_parser("collect", help="our table beside the paper's")
    collect_parser.add_argument("--root", required=True, help=root_help)
    collect_parser.add_argument("--markdown", action="store_true", help="a Markdown table")
    collect_parser.add_argument(
        "--json", help="where to write the collected numbers; default ROOT/table_b1.json"
    )
    args = parser.parse_args(argv)

    if args.command == "list":
        for cell in CELLS:
            print(f"{cell.name}\t{shlex.join(cell.flags(args.root))}")
    elif args.command == "flags":
        print(shlex.join(CELLS[args.index].flags(args.root)))
    else:
        if "://" not in args.root and not pathlib.Path(args.root).is_dir():
            parser.error(f"--root {args.root!r} is not a directory")
        records = collect(args.root)
        print(format_table(records, markdown=args.markdown))
        json_path = args.json or f"{args.root.rstrip('/')}/table_b1.json"
        document = {"table": "SimCLR Table B.1", "root": args.root, "cells": records}
        try:
            _write_text(json_path, json.dumps(document, indent=2) + "\n")
        except OSError as e:
            sys.exit(f"simclr_table_b1.py: error: cannot write {json_path}: {e}")
        print(f"wrote {json_path}", file=sys.stderr)


if __name__ == "__main__":
    if hasattr(signal, "SIGPIPE"):  # `... list | head` ends quietly
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    main()
