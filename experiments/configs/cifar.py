"""Every method on CIFAR-10 or CIFAR-100: solo-learn's ResNet-18 recipes, 1000 epochs.

    python -m sslax.train --config=experiments/configs/cifar.py:byol
    python -m sslax.train --config=experiments/configs/cifar.py:simclr,cifar100

The argument after the colon is the method, then optionally the dataset (``cifar10``, the
default, or ``cifar100``); prepare it once with ``tfds build cifar10 --file_format=array_record``.
The values are those of solo-learn's ``scripts/pretrain/cifar/*.yaml`` (read at commits
d1559571, 66cad5b8, 07f8c3bb, 6286947b, 8676d223, 78e2a670, e74719b9, 72c172b8), whose
linear-probe results REFERENCES.md lists: ResNet-18 with the CIFAR stem (3x3 stride 1, no
max-pool), batch 256, 1000 epochs with 10 warm-up epochs then cosine, LARS with biases and
normalisation parameters excluded (their trust coefficient is 0.02 with clipping; sslax's is
0.001), learning rates as given at batch 256.

Departures, where an sslax recipe stands in for a solo-learn augmentation file: the asymmetric
pipeline (MoCo v3, BYOL, DINO, Barlow Twins, VICReg) is sslax's ``byol`` recipe, which keeps
BYOL's blur (p 1.0 / 0.1) where solo-learn has none at 32 px; MoCo v2's key momentum stays at
0.99 instead of solo-learn's cosine 0.99 -> 0.999; Barlow Twins has no ``scale_loss`` 0.1
(LARS makes the update nearly independent of the loss scale); SwAV uses solo-learn's two
crops (``num_local=0``), its queue of 3840 from epoch 50 and prototypes frozen for 2 epochs;
NNCLR's projector is sslax's 3-layer one with output BatchNorm; MAE's views are the crop
(area 0.08-1, solo-learn's ``reconstruction.yaml``) and flip; DINOv2 has no solo-learn recipe
(its entry is sslax's: DINO's AdamW schedule on ViT-S/4, DINOv2's terms at their official
weights).
"""

from sslax import configs, methods

TRAIN_IMAGES = 50_000
BATCH_SIZE = 256
EPOCHS = 1000
STEPS_PER_EPOCH = TRAIN_IMAGES // BATCH_SIZE  # 195, the last partial batch dropped

# Per method: shared fields, then the method's own section.
RECIPES = {
    "simclr": (
        dict(learning_rate=0.4, weight_decay=1e-4, temperature=0.2, augment_blur=True),
        {},
    ),
    "moco_v2": (
        dict(
            optimizer="sgd", learning_rate=0.3, weight_decay=1e-4, temperature=0.2, recipe="moco_v2"
        ),
        dict(momentum=0.99, queue_size=32_768, symmetric=True),
    ),
    "moco_v3": (
        dict(
            learning_rate=0.3,
            weight_decay=1e-6,
            temperature=0.2,
            proj_hidden_dim=4096,
            recipe="byol",
        ),
        dict(momentum_base=0.99, pred_hidden_dim=4096),
    ),
    "byol": (
        dict(learning_rate=1.0, weight_decay=1e-5, proj_hidden_dim=4096, recipe="byol"),
        dict(ema_base=0.99, predictor_hidden_dim=4096),
    ),
    "simsiam": (
        dict(
            optimizer="sgd", learning_rate=0.5, weight_decay=1e-5, proj_dim=2048, recipe="moco_v2"
        ),
        dict(predictor_hidden_dim=512, fixed_predictor_lr=True),
    ),
    "dino": (
        dict(learning_rate=0.3, weight_decay=1e-6),
        dict(
            out_dim=4096,
            hidden_dim=2048,
            bottleneck_dim=256,
            use_bn_in_head=False,
            num_local=0,
            teacher_momentum_base=0.9995,
            warmup_teacher_temp=0.04,
            teacher_temp=0.07,
            warmup_teacher_temp_steps=0,
            weight_decay_end=1e-6,
            clip_grad=0.0,
            freeze_last_layer_steps=STEPS_PER_EPOCH,
        ),
    ),
    "barlow_twins": (
        dict(learning_rate=0.3, weight_decay=1e-4, recipe="byol"),
        dict(expander_dim=2048, lambd=5.1e-3),
    ),
    "vicreg": (
        dict(learning_rate=0.3, weight_decay=1e-4, recipe="byol", crop_min_scale=0.2),
        dict(expander_dim=2048, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0),
    ),
    "swav": (
        dict(learning_rate=0.6, weight_decay=1e-6, temperature=0.1, proj_dim=128),
        dict(
            num_prototypes=3000,
            queue_size=3840,
            queue_start_step=50 * STEPS_PER_EPOCH,
            freeze_prototypes_steps=2 * STEPS_PER_EPOCH,
            num_local=0,
        ),
    ),
    "nnclr": (
        dict(learning_rate=0.4, weight_decay=1e-5, temperature=0.2, recipe="byol"),
        dict(queue_size=65_536, pred_hidden_dim=4096),
    ),
    "supcon": (
        dict(optimizer="sgd", learning_rate=0.4, weight_decay=1e-5, temperature=0.2),
        {},
    ),
    "mae": (
        dict(
            model="vit_small",
            patch_size=4,
            optimizer="adamw",
            learning_rate=2e-4,
            weight_decay=0.05,
            crop_min_scale=0.08,
        ),
        dict(decoder_dim=512, decoder_depth=8, decoder_heads=16, mask_ratio=0.75, norm_pix=True),
    ),
    # No solo-learn recipe: DINO's above on a ViT-S/4, with DINOv2's own terms at their
    # official weights.
    "dinov2": (
        dict(
            model="vit_small",
            patch_size=4,
            optimizer="adamw",
            learning_rate=5e-4,
            weight_decay=0.04,
        ),
        dict(out_dim=4096, hidden_dim=2048, bottleneck_dim=256, num_local=0, local_size=16),
    ),
}
assert set(RECIPES) == set(methods.METHODS)


def get_config(arg: str = "simclr"):
    method, _, dataset = arg.partition(",")
    dataset = dataset or "cifar10"
    if method not in RECIPES:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(RECIPES)}")
    if dataset not in ("cifar10", "cifar100"):
        raise ValueError(f"unknown dataset {dataset!r}; choose cifar10 or cifar100")
    c = configs.shapes_config(method)
    shared, section = RECIPES[method]
    c.update(
        dict(
            dataset=f"tfds:{dataset}",
            eval_split="test",
            image_size=32,
            model="resnet18",
            width=1.0,
            stem="cifar",
            proj_hidden_dim=2048,
            proj_dim=256,
            batch_size=BATCH_SIZE,
            total_steps=EPOCHS * STEPS_PER_EPOCH,
            warmup_steps=10 * STEPS_PER_EPOCH,
            optimizer="lars",
            lr_scaling="linear",
            momentum=0.9,
            recipe="simclr",
            augment_strength=1.0,
            crop_min_scale=0.08,
            log_every=100,
            checkpoint_every=10 * STEPS_PER_EPOCH,
            knn_train_examples=TRAIN_IMAGES,
            knn_test_examples=10_000,
        )
    )
    c.update(shared)
    c[method].update(section)
    return c.lock()
