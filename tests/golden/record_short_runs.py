"""Writes tests/golden/short_runs.json: short runs' checksums and metrics, to compare against.

    python tests/golden/record_short_runs.py

Run it only on purpose (it records what the code does now): it was run once before the
training loop of sslax.train was split into named pieces (issue 16), so that
tests/test_train_loop.py can show the split changed no bit; and again when issue 17 laid the
views out image-major, which changes the order of floating-point sums (BatchNorm statistics,
the losses): every metric moved by at most 6e-6 of its value (the largest: DINO's embedding
std), the kNN and probe accuracies not at all. Issue 19 recorded it again for the new laptop
views and temperature, which change the SimCLR run; the DINO run, whose views and loss do not
read them, kept every number but the alignment and effective rank of the evaluation views
(drawn with the laptop views), and both gained ``linear_top1_raw_pixels``
(``skipped_images``, written by the recorder but not compared, was taken out by hand). The
runs use the test setting (8 simulated CPU devices, sslax's XLA:CPU flags), as under pytest.
"""

import json
import pathlib
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def _test_setting() -> None:
    """The repository's conftest.py: 8 CPU devices and the tuned XLA flags, before JAX starts."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("root_conftest", ROOT / "conftest.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


def main() -> None:
    import os

    sys.path[:0] = [str(ROOT), str(HERE.parent)]  # this checkout's sslax; tests/short_runs.py
    _test_setting()  # here, not at import: pytest's doctest collection imports this module
    import jax
    from short_runs import RUNS, short_run

    assert jax.device_count() == 8, "not the test setting"

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SSLAX_DATA_DIR"] = os.path.join(tmp, "data")
        record = {
            "jax": jax.__version__,
            "runs": {name: short_run(name, pathlib.Path(tmp) / name) for name in RUNS},
        }
    (HERE / "short_runs.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record)[:400])


if __name__ == "__main__":
    main()
