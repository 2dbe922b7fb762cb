"""The collectives of each method's compiled train step on 8 simulated CPU devices.

    python tests/collectives.py MESH METHOD [METHOD ...]

MESH is ``data`` (8 devices on ``data``) or ``fsdp`` (``data`` 4 x ``fsdp`` 2). For each method
it prints one JSON line: the method, the per-kind counts and bytes per device that
:func:`sslax.plan.collective_stats` reads from the compiled HLO, and the sizes the test checks
them against (gradients, embeddings). A child process, because the device count and XLA's
flags must be set before JAX starts: XLA:CPU's backend optimisation is off here, since only
the partitioned HLO matters and it comes before code generation.
"""

from __future__ import annotations

import json
import os
import sys

MESHES = {"data": (("data", -1),), "fsdp": (("data", -1), ("fsdp", 2))}
BATCH = 64  # 8 images per device
DEVICES = 8


def config_for(method: str, mesh: str):
    from sslax import configs

    config = configs.shapes_config(method)
    config.batch_size = BATCH
    config.mesh = MESHES[mesh]
    return config


def measure(method: str, mesh_name: str) -> dict:
    import math

    import jax

    from sslax import parallel, plan, train

    config = config_for(method, mesh_name)
    mesh = parallel.make_mesh(config.mesh)
    program = train.build_program(config, mesh)
    compiled, _ = plan.compile_train_step(program, mesh)
    params = program.state_shapes.params
    return {
        "method": method,
        "mesh": mesh_name,
        "collectives": plan.collective_stats(compiled.as_text()),
        "grad_bytes": sum(math.prod(p.shape) * p.dtype.itemsize for p in jax.tree.leaves(params)),
        "proj_dim": config.proj_dim,
        "model": config.model,
        "section": config[method].to_dict() if method in config else {},
    }


def main(argv: list[str]) -> None:
    mesh_name, methods = argv[1], argv[2:]
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
        " --xla_llvm_disable_expensive_passes=true"
    )
    import jax

    jax.config.update("jax_num_cpu_devices", DEVICES)
    for method in methods:
        print(json.dumps(measure(method, mesh_name)), flush=True)


if __name__ == "__main__":
    main(sys.argv)
