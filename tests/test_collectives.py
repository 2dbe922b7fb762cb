"""What crosses devices in each method's compiled train step (issue 17).

In data parallelism only gradients, BatchNorm statistics, the embeddings or keys a loss gathers
and metrics need to cross devices. Each method's step is compiled for 8 simulated devices (the
laptop config at batch 64, 8 images per device) and the collectives of the compiled HLO are
checked kind by kind against those sizes, so that a view, an activation or an embedding that
starts to travel shows up here. Before issue 17 every method moved its views between devices
(all-to-all and collective-permute, 410 KiB to 1 MiB per device per step at this size).

The compiles run in two child processes (tests/collectives.py), one per core. The default suite
checks one method of each kind of step (SimCLR: a gathered loss; MoCo v2: a momentum encoder and
grouped BatchNorm; Barlow Twins: one pass per view; DINO: multi-crop); the others and the
data x fsdp mesh are slow (CI's time budget).
"""

import json
import pathlib
import subprocess
import sys

import pytest

from sslax import plan
from sslax.models.vit import VIT_PRESETS

CHILD = pathlib.Path(__file__).parent / "collectives.py"
METHODS = (
    "simclr",
    "byol",
    "simsiam",
    "moco_v2",
    "moco_v3",
    "barlow_twins",
    "vicreg",
    "dino",
    "swav",
    "nnclr",
    "supcon",
    "mae",
    "dinov2",
)
KINDS = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
BATCH, DEVICES, F32 = 64, 8, 4
LOCAL = BATCH // DEVICES


DEFAULT = ("simclr", "moco_v2", "barlow_twins", "dino")
CASES = [m if m in DEFAULT else pytest.param(m, marks=pytest.mark.slow) for m in METHODS]


def _measure(mesh: str, methods) -> dict[str, dict]:
    halves = [methods[0::2], methods[1::2]]
    children = [
        subprocess.Popen(
            [sys.executable, str(CHILD), mesh, *half], stdout=subprocess.PIPE, text=True
        )
        for half in halves
    ]
    records = {}
    for child in children:
        out, _ = child.communicate(timeout=900)
        assert child.returncode == 0, f"tests/collectives.py {mesh} failed"
        for line in out.splitlines():
            record = json.loads(line)
            records[record["method"]] = record
    return records


@pytest.fixture(scope="module")
def data_mesh(request):
    # Only the methods this session selected: the default suite compiles four.
    selected = {
        item.callspec.params["method"]
        for item in request.session.items
        if "data_mesh" in getattr(item, "fixturenames", ()) and hasattr(item, "callspec")
    }
    return _measure("data", [m for m in METHODS if m in selected])


def _gathered_by_the_loss(method: str, record: dict) -> int:
    """Bytes per device of the embeddings or keys the method's loss gathers from every device."""
    embeddings = BATCH * record["proj_dim"] * F32
    # SimCLR's negatives are both views of every image, MoCo v3's the keys of both views;
    # MoCo v2 gathers one key per image to enqueue. SupCon gathers both views and their labels
    # (int32: per view for the loss, per image for its same-class metric); NNCLR the
    # predictions of both views (the other side of each logit matrix) and one projection per
    # image to enqueue. DINOv2's KoLeo searches each global crop's class
    # tokens over the batch: two gathers per crop (the neighbour search, the neighbours' rows).
    # The rest reduce statistics instead (SwAV's Sinkhorn-Knopp sums over the batch).
    if method == "dinov2":
        return 2 * 2 * BATCH * VIT_PRESETS[record["model"]][0] * F32
    return {
        "simclr": 2 * embeddings,
        "moco_v3": 2 * embeddings,
        "moco_v2": embeddings,
        "supcon": 2 * embeddings + 3 * BATCH * 4,
        "nnclr": 3 * embeddings,
    }.get(method, 0)


# At most this many gradients' worth of all-reduce per step. A method whose encoder runs more
# than once (MoCo v3: one pass per view; DINO, DINOv2 and SwAV: the global and the local crops
# at their own resolutions; Barlow Twins and VICReg: one pass per view for per-view BatchNorm)
# gets a partial gradient per pass, and XLA:CPU all-reduces a share of them, or each, before summing
# (measured: 2.02, 1.81, 2.17 and, beside its covariances, 2.17 gradients). The TPU compiler
# sums them first (test_per_view_passes_reduce_the_gradient_once_on_tpu).
GRADIENT_PASSES = {
    "moco_v3": 2,
    "dino": 2,
    "barlow_twins": 2,
    "vicreg": 2,
    "swav": 2,
    "dinov2": 2,
}


def _reduced_by_the_loss(method: str, record: dict) -> int:
    """Bytes per device of the batch statistics the method's loss all-reduces, beyond metrics."""
    if method == "vicreg":  # each view's [D, D] covariance: a sum over the whole batch
        return 2 * record["section"]["expander_dim"] ** 2 * F32
    return 0


@pytest.mark.parametrize("method", CASES)
def test_only_gradients_statistics_and_the_losses_embeddings_cross_devices(method, data_mesh):
    record = data_mesh[method]
    stats = record["collectives"]
    assert set(stats) == set(KINDS)
    # Views and activations never travel: no collective moves rows between devices.
    assert stats["collective-permute"]["count"] == 0, stats
    gathered = _gathered_by_the_loss(method, record)
    assert stats["all-gather"]["bytes_per_device"] == gathered, stats
    if method in ("barlow_twins", "vicreg"):
        # Their losses correlate the features over the batch: XLA splits the two views'
        # [N, D] projections over D (an all-to-all of each device's rows, and back for the
        # gradient) rather than all-reducing a [D, D] matrix per device.
        dim = record["section"]["expander_dim"]
        assert stats["all-to-all"]["bytes_per_device"] == 2 * 2 * LOCAL * dim * F32, stats
    else:
        assert stats["all-to-all"]["count"] == 0, stats
    # Gradients are all-reduced (on XLA:CPU no reduce-scatter), plus BatchNorm statistics,
    # the loss's batch statistics and metrics: a few percent on top.
    grads = record["grad_bytes"]
    most = grads * GRADIENT_PASSES.get(method, 1) * 1.12 + _reduced_by_the_loss(method, record)
    most += 2**16
    assert grads <= stats["all-reduce"]["bytes_per_device"] <= most, (stats, grads)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_data_x_fsdp_moves_no_views_or_activations(method, fsdp_mesh):
    # data 4 x fsdp 2: the batch is split 8 ways as before, and the large parameters 2 ways,
    # so parameters are all-gathered where they are used and gradients reduced back.
    record = fsdp_mesh[method]
    stats = record["collectives"]
    assert stats["collective-permute"]["count"] == 0, stats
    allowed = 0
    if method in ("barlow_twins", "vicreg"):
        allowed = 2 * 2 * LOCAL * record["section"]["expander_dim"] * F32  # as on data alone
    elif method == "moco_v2":
        # The queue ([K, D], over FSDP_MIN_SIZE elements) is split over fsdp; XLA computes
        # each query's logits against the half of the queue a device holds and sends them to
        # the query's device, N_local x K floats, instead of gathering the queue.
        allowed = LOCAL * record["section"]["queue_size"] * F32
    elif method == "nnclr":
        # The same for the support set, searched once per view.
        allowed = 2 * LOCAL * record["section"]["queue_size"] * F32
    assert stats["all-to-all"]["bytes_per_device"] == allowed, stats


@pytest.fixture(scope="module")
def fsdp_mesh():
    return _measure("fsdp", METHODS)


@pytest.mark.slow  # a TPU compile, 22 s
@pytest.mark.skipif(not plan.libtpu_installed(), reason="libtpu is not installed")
def test_per_view_passes_reduce_the_gradient_once_on_tpu(tmp_path):
    # On XLA:CPU each per-view pass's partial gradient is all-reduced on its own (above); the
    # target compiler sums the partial gradients first, so a pod pays for one gradient.
    import math

    import jax

    from sslax import configs, methods

    config = configs.shapes_config("barlow_twins")
    images = jax.ShapeDtypeStruct((1, config.image_size, config.image_size, 3), "uint8")
    state = jax.eval_shape(methods.get("barlow_twins").make(config).init, jax.random.key(0), images)
    grads = sum(math.prod(p.shape) * p.dtype.itemsize for p in jax.tree.leaves(state.params))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "sslax.plan",
            "--config=experiments/configs/barlow_twins.py",
            f"--config.batch_size={BATCH}",
            "--topology=v5e:2x4",
            f"--out={tmp_path}",
        ],
        capture_output=True,
        text=True,
        cwd=CHILD.parents[1],
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    reduced = json.loads((tmp_path / "plan.json").read_text())["collectives"]["all-reduce"]
    assert grads <= reduced["bytes_per_device"] <= grads * 1.12 + 2**16, (reduced, grads)
