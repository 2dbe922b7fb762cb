"""Meshes, shardings, global batches and multi-host start-up.

sslax runs one program over every device with :func:`jax.jit` and :class:`NamedSharding`; XLA
inserts the collectives. The batch is split over the mesh axes ``data`` and (if present)
``fsdp``; ``fsdp`` also splits the large parameters and their optimiser state, so a model too
big to replicate fits (ZeRO-3 style: XLA all-gathers a weight where it is used). Losses, BatchNorm
statistics, MoCo queue updates and the DINO centre are written over the global batch, so they
are global whatever the mesh.

Multi-host runs use JAX's own multi-controller runtime: every process runs the same program on
its own devices, after :func:`initialize_distributed`. Each process reads only the rows of the
global batch that its devices hold (:func:`local_batch_rows`) and :func:`global_batch` assembles
the global array from them, so the batch at a step is the same images in the same order for any
number of processes.

>>> mesh = make_mesh([("data", -1)], devices=jax.devices()[:1])
>>> dict(mesh.shape), batch_axes(mesh)
({'data': 1}, ('data',))
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

# The axes a mesh may have; both split the batch, "fsdp" also splits parameters.
AXES = ("data", "fsdp")
# Every device splits the batch, no parameter sharding: the laptop default.
DEFAULT_MESH = (("data", -1),)
# Leaves with fewer elements stay replicated under fsdp: splitting a bias or a BatchNorm scale
# saves nothing and costs a collective.
FSDP_MIN_SIZE = 2**14
DISTRIBUTED_MODES = ("auto", "on", "off")


class MeshError(ValueError):
    """A mesh spec that cannot be built on the devices at hand."""


def parse_mesh_spec(spec: Sequence[Sequence[Any]], num_devices: int) -> list[tuple[str, int]]:
    """Resolves ``[("data", -1), ("fsdp", 2)]`` against ``num_devices``; raises MeshError.

    At most one axis may be -1: it takes the devices the other axes leave.

    >>> parse_mesh_spec([("data", -1), ("fsdp", 2)], 8)
    [('data', 4), ('fsdp', 2)]
    """
    resolved, names = [], []
    for entry in spec:
        if len(entry) != 2 or not isinstance(entry[0], str) or isinstance(entry[1], bool):
            raise MeshError(f"mesh entries are (axis name, size) pairs, got {entry!r}")
        name, size = entry[0], entry[1]
        if name not in AXES:
            raise MeshError(f"unknown mesh axis {name!r}; axes are {', '.join(AXES)}")
        if name in names:
            raise MeshError(f"mesh axis {name!r} appears twice in {list(spec)!r}")
        if not isinstance(size, int) or (size <= 0 and size != -1):
            raise MeshError(f"mesh axis {name!r} needs a positive size or -1, got {size!r}")
        names.append(name)
        resolved.append([name, size])
    if not resolved:
        raise MeshError("the mesh needs at least one axis, e.g. [('data', -1)]")
    if [size for _, size in resolved].count(-1) > 1:
        raise MeshError(f"at most one mesh axis may be -1, got {list(spec)!r}")
    fixed = math.prod(size for _, size in resolved if size != -1)
    for entry in resolved:
        if entry[1] == -1:
            if num_devices % fixed:
                raise MeshError(
                    f"mesh {list(spec)!r}: {num_devices} devices do not divide by the fixed axes' "
                    f"product {fixed}"
                )
            entry[1] = num_devices // fixed
    total = math.prod(size for _, size in resolved)
    if total != num_devices:
        raise MeshError(f"mesh {list(spec)!r} has {total} devices, but there are {num_devices}")
    return [(name, size) for name, size in resolved]


def make_mesh(spec: Sequence[Sequence[Any]], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over ``devices`` (default: all devices of all processes) from a config spec."""
    devices = list(jax.devices() if devices is None else devices)
    shape = parse_mesh_spec(spec, len(devices))
    names = tuple(name for name, _ in shape)
    sizes = tuple(size for _, size in shape)
    auto = (jax.sharding.AxisType.Auto,) * len(names)
    return jax.make_mesh(sizes, names, axis_types=auto, devices=devices)


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
    """The mesh axes the batch dimension is split over, in mesh order."""
    return tuple(name for name in mesh.axis_names if name in AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over every batch axis, the rest replicated."""
    return NamedSharding(mesh, P(batch_axes(mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def num_batch_shards(mesh: Mesh) -> int:
    """What the global batch must divide by."""
    return math.prod(mesh.shape[name] for name in batch_axes(mesh))


def batch_shards_in_context() -> tuple[tuple[str, ...], int]:
    """The batch axes of the mesh set with :func:`jax.set_mesh` and their total size.

    ``((), 1)`` with no mesh in context: the code being traced runs on one device.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return (), 1
    axes = tuple(name for name in mesh.axis_names if name in AXES)
    return axes, math.prod(mesh.shape[name] for name in axes)


def keep_batch_sharded(tree: Any) -> Any:
    """Each array of ``tree`` constrained to be split over the batch axes on its first axis.

    Identity with no mesh in context, and for scalars and arrays whose first axis does not
    divide over the batch shards (they are not batches).
    """
    axes, shards = batch_shards_in_context()
    if not axes:
        return tree

    def constrain(x):
        if not isinstance(x, jax.Array) or x.ndim == 0 or x.shape[0] % shards:
            return x
        return jax.lax.with_sharding_constraint(x, P(axes))

    return jax.tree.map(constrain, tree)


def batch_sharded_activations(next_fun, args, kwargs, context):
    """A :func:`flax.linen.intercept_methods` interceptor: every module's output stays split
    over the batch, as data parallelism wants.

    Without it the partitioner may, where a weight is split over ``fsdp``, split an activation
    over its features instead of gathering the weight, and move the activation with an
    all-to-all.
    """
    outputs = next_fun(*args, **kwargs)
    return keep_batch_sharded(outputs) if context.method_name == "__call__" else outputs


def _leaf_spec(shape: tuple[int, ...], fsdp: int) -> P:
    if fsdp <= 1 or math.prod(shape) < FSDP_MIN_SIZE:
        return P()
    # The largest dimension that divides evenly: for a conv kernel [kh, kw, cin, cout] that is
    # usually cout, for the MoCo queue [K, D] the queue length.
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % fsdp == 0:
            spec = [None] * len(shape)
            spec[dim] = "fsdp"
            return P(*spec)
    return P()


def state_shardings(state_shapes: Any, mesh: Mesh) -> Any:
    """Shardings for a train-state pytree: replicated, or split over ``fsdp`` when it exists.

    ``state_shapes`` is the state or its :func:`jax.eval_shape`. Under fsdp every leaf of at least
    :data:`FSDP_MIN_SIZE` elements is split along its largest evenly divisible dimension;
    parameters and their optimiser moments have equal shapes and so are split alike.
    """
    fsdp = mesh.shape.get("fsdp", 1)
    return jax.tree.map(
        lambda x: NamedSharding(mesh, _leaf_spec(tuple(x.shape), fsdp)), state_shapes
    )


def local_batch_rows(sharding: NamedSharding, global_batch_size: int) -> np.ndarray:
    """The global batch rows held by this process's devices, ascending (what it must read)."""
    rows = set()
    for index in sharding.addressable_devices_indices_map((global_batch_size,)).values():
        rows.update(range(*index[0].indices(global_batch_size)))
    return np.array(sorted(rows), dtype=np.int64)


def global_batch(
    local: dict[str, np.ndarray], rows: np.ndarray, sharding: NamedSharding, global_batch_size: int
) -> dict[str, jax.Array]:
    """Global arrays from this process's rows of each field: ``local[k][i]`` is row ``rows[i]``."""
    position = np.full(global_batch_size, -1, dtype=np.int64)
    position[rows] = np.arange(len(rows))

    def assemble(x: np.ndarray) -> jax.Array:
        if len(x) != len(rows):
            raise ValueError(f"local batch has {len(x)} rows, this process holds {len(rows)}")

        def shard(index):
            wanted = position[index[0]]
            if (wanted < 0).any():
                raise ValueError("a device asked for rows this process did not read")
            return x[wanted]

        return jax.make_array_from_callback((global_batch_size,) + x.shape[1:], sharding, shard)

    return {key: assemble(value) for key, value in local.items()}


def host_array_to_global(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from a host array that every process holds whole (evaluation data)."""
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def _cluster_detected() -> bool:
    """A launcher that starts one process per task and tells JAX how to find the others."""
    for count in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        try:
            if int(os.environ.get(count, "1")) > 1:
                return True
        except ValueError:
            pass
    return False


def initialize_distributed(
    mode: str = "auto",
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout_s: int = 100,
) -> bool:
    """Starts JAX's multi-controller runtime when this is a multi-process run. Returns whether.

    Modes: ``"off"`` never; ``"on"`` always, with JAX's cluster auto-detection (TPU pods, SLURM,
    Open MPI, ...) filling what the explicit arguments leave out; ``"auto"`` (default) when
    explicit arguments are given or a SLURM / Open MPI launch of several tasks is detected.

    ``timeout_s`` bounds how long the others wait for a process that died or never came up: the
    coordination service's heartbeat timeout and its shutdown barrier. Without it a dead peer
    would leave the survivors blocked in a collective.
    """
    if mode not in DISTRIBUTED_MODES:
        raise ValueError(f"distributed must be one of {', '.join(DISTRIBUTED_MODES)}, got {mode!r}")
    explicit = [coordinator_address, num_processes, process_id]
    given = [v is not None for v in explicit]
    if mode == "off":
        if any(given):
            raise ValueError(
                "--coordinator_address/--num_processes/--process_id need distributed on"
            )
        return False
    if mode == "auto":
        if any(given) and not all(given):
            raise ValueError(
                "--coordinator_address, --num_processes and --process_id go together "
                "(or use --distributed=on to let JAX detect the rest)"
            )
        if not any(given) and not _cluster_detected():
            return False
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=timeout_s,
        heartbeat_timeout_seconds=timeout_s,
        shutdown_timeout_seconds=timeout_s,
    )
    return True
