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
number of processes. When a process dies, the others exit within the ``timeout_s`` of
:func:`initialize_distributed` (at once when they are in a collective) with one line naming it
and saying where a relaunch resumes (:func:`set_resume_hint`), and exit code
:data:`LOST_PEER_EXIT_CODE` (75).

>>> mesh = make_mesh([("data", -1)], devices=jax.devices()[:1])
>>> dict(mesh.shape), batch_axes(mesh)
({'data': 1}, ('data',))
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

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
    command: str = "sslax",
) -> bool:
    """Starts JAX's multi-controller runtime when this is a multi-process run. Returns whether.

    Modes: ``"off"`` never; ``"on"`` always, with JAX's cluster auto-detection (TPU pods, SLURM,
    Open MPI, ...) filling what the explicit arguments leave out; ``"auto"`` (default) when
    explicit arguments are given or a SLURM / Open MPI launch of several tasks is detected.

    ``timeout_s`` bounds how long the others wait for a process that died or never came up: the
    coordination service's heartbeat timeout and its shutdown barrier. Without it a dead peer
    would leave the survivors blocked in a collective. When the service reports a dead process
    (or is itself gone), this process ends with one line and :data:`LOST_PEER_EXIT_CODE`,
    naming itself ``command`` (see :func:`exit_for_lost_peer`).
    """
    global _command
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
    _command = command
    with _lost_peer_callback():
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=timeout_s,
            heartbeat_timeout_seconds=timeout_s,
            shutdown_timeout_seconds=timeout_s,
        )
    return True


# --------------------------------------------------------------------------------------------
# A process that lost a peer: one line, a distinct exit code, at once.
#
# A SIGKILLed process closes its sockets, so a survivor inside a gloo collective gets an
# exception at once (train.main turns it into the line, via lost_peer_reason). A survivor outside
# a collective, or one whose coordinator (process 0) died, hears it from JAX's coordination
# service instead, whose client by default ends the process with a native abort and stack dump.

# Exit status of a process that stops because another process of its run is gone: sysexits'
# EX_TEMPFAIL ("try again"), since relaunching every process resumes from the newest checkpoint.
LOST_PEER_EXIT_CODE = 75
DEFAULT_RESUME_HINT = (
    "relaunch every process with the same flags to resume from the newest checkpoint"
)
# Errors that say another process of the run is gone: a gloo collective whose peer closed its
# connections, or the coordination service reporting missed heartbeats or itself unreachable.
_LOST_PEER = re.compile(
    r"Gloo \S+ failed|Connection (reset|closed) by peer|heartbeat timeout|"
    r"stopped sending heartbeats|Failed to send RPC to coordination service"
)
_LOST_TASK = re.compile(r"[Tt]ask (\d+) heartbeat timeout|stopped sending heartbeats\):\s*(\d+)")
_command = "sslax"
_resume_hint: Callable[[], str] | None = None
_exiting = threading.Lock()
_keep_alive: list = []  # ctypes callbacks must outlive the C++ code that holds them


def set_resume_hint(hint: Callable[[], str]) -> None:
    """``hint()`` says where a relaunch resumes, in the line of a process that lost a peer.

    E.g. "the newest checkpoint every process finished is step 940 in gs://b/run/checkpoints;
    relaunch every process with the same flags to resume from it". It is called when the line
    is printed (given at most 10 s); without one the line says :data:`DEFAULT_RESUME_HINT`.
    """
    global _resume_hint
    if not callable(hint):
        raise TypeError(f"set_resume_hint needs a function () -> str, got {hint!r}")
    _resume_hint = hint


def lost_peer_reason(error: BaseException) -> str | None:
    """The text of ``error``, or of an exception it came from, that says a peer is gone; or None.

    Always None outside a multi-process run.
    """
    if _distributed_state().client is None:
        return None
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if _LOST_PEER.search(str(error)):
            return str(error)
        error = error.__cause__ or error.__context__
    return None


def exit_for_lost_peer(reason: str) -> NoReturn:
    """Ends this process at once with one line on stderr and :data:`LOST_PEER_EXIT_CODE`.

    ``reason`` is the runtime's error text; the line names the lost process when it does (or
    when there is only one other), and where a relaunch resumes (:func:`set_resume_hint`).
    ``os._exit``, not ``sys.exit``: exit handlers would run JAX's shutdown barrier, which waits
    for the dead process and then aborts with a native stack dump.
    """
    _exiting.acquire()  # a second caller (another thread) waits here for the first to end us
    try:
        state = _distributed_state()  # not jax.process_index(): no backend calls on this path
        me, count = state.process_id, state.num_processes
        match = _LOST_TASK.search(reason)
        if match:
            lost = f"process {match[1] or match[2]}"
        elif count == 2:
            lost = f"process {1 - me}"
        elif "Failed to send RPC to coordination service" in reason:
            lost = "process 0 (the coordinator)"
        else:
            lost = "another process"
        detail = " ".join(reason.split())
        detail = detail if len(detail) <= 240 else detail[:237] + "..."
        print(
            f"{_command}: error: {lost} of this {count}-process run is gone ({detail}), so "
            f"process {me} stops too; {_resume_hint_text()}",
            file=sys.stderr,
            flush=True,
        )
        sys.stdout.flush()
    finally:
        os._exit(LOST_PEER_EXIT_CODE)


def _distributed_state():
    from jax._src import distributed

    return distributed.global_state


def _resume_hint_text(timeout_s: float = 10.0) -> str:
    """The hint, or the default if it fails or takes longer than ``timeout_s`` (storage)."""
    if _resume_hint is None:
        return DEFAULT_RESUME_HINT
    result = []

    def call():
        # A broken hint must not keep the process alive: the default is said instead.
        with contextlib.suppress(Exception):
            result.append(" ".join(str(_resume_hint()).split()))

    thread = threading.Thread(target=call, daemon=True, name="sslax-resume-hint")
    thread.start()
    thread.join(timeout_s)
    return result[0] if result else DEFAULT_RESUME_HINT


@contextlib.contextmanager
def _lost_peer_callback():
    """Within: JAX's client is made with ``missed_heartbeat_callback`` = the one-line exit.

    jax.distributed.initialize passes no callback to the binding that takes one, so the client
    would abort with a native stack dump. jaxlib 0.10.2's binding cannot hand the callback its
    absl::Status (no Python type for it): the conversion throws std::bad_cast in the client's
    thread and C++ calls std::terminate, so a terminate handler for exactly that exception makes
    the exit (without the status). A jaxlib that converts the status calls the callback itself.
    Without the private binding or libstdc++, JAX's default stays.
    """
    from jax._src import distributed

    binding = distributed._jax
    make_client = getattr(binding, "get_distributed_runtime_client", None)
    if make_client is None or "missed_heartbeat_callback" not in (make_client.__doc__ or ""):
        yield
        return

    def with_callback(*args, **kwargs):
        if _keep_alive or _install_terminate_handler():
            kwargs["missed_heartbeat_callback"] = lambda status: exit_for_lost_peer(str(status))
        return make_client(*args, **kwargs)

    binding.get_distributed_runtime_client = with_callback
    try:
        yield
    finally:
        binding.get_distributed_runtime_client = make_client


def _install_terminate_handler() -> bool:
    """std::terminate on std::bad_cast (the callback's status conversion) ends us in one line."""
    import ctypes

    try:
        libstdcxx = ctypes.CDLL("libstdc++.so.6")
        set_terminate = libstdcxx._ZSt13set_terminatePFvvE  # std::set_terminate
        exception_type = libstdcxx.__cxa_current_exception_type
    except (OSError, AttributeError):
        return False
    handler_type = ctypes.CFUNCTYPE(None)
    set_terminate.restype, set_terminate.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
    exception_type.restype = ctypes.c_void_p

    def on_terminate():
        info = exception_type()
        # A std::type_info (Itanium C++ ABI): a vtable pointer, then the mangled name.
        name = b""
        if info:
            name = ctypes.c_char_p.from_address(info + ctypes.sizeof(ctypes.c_void_p)).value
        if b"bad_cast" in name or b"cast_error" in name:
            unreachable = "" if _distributed_state().process_id == 0 else ", or is unreachable"
            exit_for_lost_peer(
                "JAX's coordination service reported a process that stopped sending "
                f"heartbeats{unreachable}"
            )
        previous()  # any other exception: the usual report and abort

    handler = handler_type(on_terminate)
    previous_address = set_terminate(ctypes.cast(handler, ctypes.c_void_p))
    previous = handler_type(previous_address) if previous_address else os.abort
    _keep_alive.append(handler)
    return True
