"""SupCon: the labels choose the positives; with every label distinct it is SimCLR."""

import jax
import jax.numpy as jnp
import numpy as np

from sslax import configs, methods

BATCH = 16


def _step(name, labels):
    config = configs.shapes_config(name)
    config.update(
        dict(batch_size=BATCH, image_size=16, width=0.125, proj_hidden_dim=32, proj_dim=16)
    )
    method = methods.get(name).make(config)
    images = np.random.default_rng(0).integers(0, 256, (BATCH, 16, 16, 3), dtype=np.uint8)
    batch = {"image": jnp.asarray(images), "index": jnp.arange(BATCH, dtype=jnp.int32)}
    if labels is not None:
        batch["label"] = jnp.asarray(labels, jnp.int32)
    state = jax.jit(method.init)(jax.random.key(0), images[:1])
    return jax.jit(method.train_step)(state, batch, jax.random.key(1))


def test_distinct_labels_give_simclr_and_shared_labels_change_the_step():
    simclr_state, simclr_metrics = _step("simclr", None)
    distinct_state, distinct_metrics = _step("supcon", np.arange(BATCH))
    np.testing.assert_allclose(distinct_metrics["loss"], simclr_metrics["loss"], rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        distinct_state.params,
        simclr_state.params,
    )
    assert float(distinct_metrics["same_class_images"]) == 0.0
    _, shared_metrics = _step("supcon", np.arange(BATCH) % 4)
    assert float(shared_metrics["same_class_images"]) == 3.0
    assert abs(float(shared_metrics["loss"]) - float(distinct_metrics["loss"])) > 0.1


def test_only_supcon_asks_for_labels():
    assert [m for m in methods.METHODS if methods.get(m).make(_tiny(m)).uses_labels] == ["supcon"]


def _tiny(name):
    config = configs.shapes_config(name)
    config.update(dict(image_size=16, width=0.125, proj_hidden_dim=32, proj_dim=16))
    if name == "dino":
        config.dino.local_size = 8
    if name == "swav":
        config.swav.local_size = 8
    if name == "dinov2":
        config.dinov2.local_size = 8
    return config
