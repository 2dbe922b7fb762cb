"""The PyTorch side of the side-by-side benchmark: the same models and SimCLR step in torch.

Written the way the seed's code and the PyTorch SSL libraries (solo-learn, lightly) run a
SimCLR step: both views in one forward pass, global-batch InfoNCE, ``loss.backward()``,
``optimizer.step()``. Models mirror :mod:`sslax.models` layer for layer: torchvision-style
ResNets (basic or bottleneck blocks, ImageNet or CIFAR stem, zero-initialised last BN of each
block) and timm-style ViTs (pre-norm, fused qkv, ``scaled_dot_product_attention``), each with
SimCLR's Dense-BN-ReLU-Dense projector. Only imported by ``run.py`` when torch is installed
(``pip install -e '.[bench]'``); nothing in ``sslax`` imports torch.

Two things favour torch, on purpose, so that a ratio >= 1 means something: the views arrive
ready-made (torch does no augmentation inside the timed step, sslax does), and the optimiser
is plain SGD with momentum (sslax runs LARS, which adds a trust ratio per layer).
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

RESNETS = {"resnet18": ((2, 2, 2, 2), False), "resnet50": ((3, 4, 6, 3), True)}
VITS = {"vit_tiny": (192, 12, 3, 768), "vit_small": (384, 12, 6, 1536)}


class _Block(nn.Module):
    def __init__(self, cin: int, width: int, stride: int, bottleneck: bool):
        super().__init__()
        cout = width * (4 if bottleneck else 1)
        if bottleneck:
            layers = [
                nn.Conv2d(cin, width, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, stride, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, cout, 1, bias=False),
            ]
        else:
            layers = [
                nn.Conv2d(cin, width, 3, stride, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, cout, 3, 1, 1, bias=False),
            ]
        last_bn = nn.BatchNorm2d(cout)
        nn.init.zeros_(last_bn.weight)
        self.residual = nn.Sequential(*layers, last_bn)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        return F.relu(self.residual(x) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, name: str, stem: str, width: float = 1.0):
        super().__init__()
        stages, bottleneck = RESNETS[name]
        base = max(8, int(round(64 * width)))
        if stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(3, base, 7, 2, 3, bias=False),
                nn.BatchNorm2d(base),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(3, base, 3, 1, 1, bias=False), nn.BatchNorm2d(base), nn.ReLU(inplace=True)
            )
        blocks, cin = [], base
        for i, n in enumerate(stages):
            for j in range(n):
                blocks.append(_Block(cin, base * 2**i, 2 if i > 0 and j == 0 else 1, bottleneck))
                cin = base * 2**i * (4 if bottleneck else 1)
        self.blocks = nn.Sequential(*blocks)
        self.out_dim = cin

    def forward(self, x):
        return self.blocks(self.stem(x)).mean((2, 3))


class _EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, dim)

    def forward(self, x):
        b, t, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(a)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    def __init__(self, name: str, patch_size: int, image_size: int):
        super().__init__()
        dim, depth, heads, mlp_dim = VITS[name]
        self.patch_embed = nn.Conv2d(3, dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        grid = image_size // patch_size
        self.pos_embedding = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        nn.init.trunc_normal_(self.pos_embedding, std=0.02)
        self.blocks = nn.Sequential(*[_EncoderBlock(dim, heads, mlp_dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.out_dim = dim

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embedding
        return self.norm(self.blocks(x))[:, 0]


class SimCLRModel(nn.Module):
    def __init__(self, backbone: nn.Module, hidden_dim: int, out_dim: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(
            nn.Linear(backbone.out_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, x):
        return self.head(self.backbone(x))


def info_nce(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean NT-Xent over the 2N views z = [z1; z2], the self-similarity masked out."""
    z = F.normalize(z.float(), dim=1)
    n = z.shape[0] // 2
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(logits, targets)


def build(config) -> SimCLRModel:
    """The torch twin of ``sslax.methods.simclr.make(config)``'s encoder."""
    if config.model in RESNETS:
        backbone = ResNet(config.model, config.stem, config.width)
    elif config.model in VITS:
        backbone = ViT(config.model, config.patch_size, config.image_size)
    else:
        raise ValueError(f"no torch twin for model {config.model!r}")
    return SimCLRModel(backbone, config.proj_hidden_dim, config.proj_dim)


def time_simclr_step(config, *, channels_last: bool, repeats: int, warmup: int) -> dict:
    """Median seconds of one SimCLR step on ready-made views, and the setting it ran with."""
    torch.manual_seed(0)
    model = build(config)
    n, size = config.batch_size, config.image_size
    views = torch.rand(2 * n, 3, size, size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        views = views.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=config.momentum)
    bf16 = config.compute_dtype == "bfloat16"

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            z = model(views)
        loss = info_nce(z, config.temperature)
        loss.backward()
        optimizer.step()
        return loss

    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - start)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"torch step gave a non-finite loss {loss.item()}")
    return {
        "step_s": statistics.median(times),
        "setting": ("channels_last" if channels_last else "contiguous")
        + (", bf16 autocast" if bf16 else ", float32")
        + f", {torch.get_num_threads()} threads, torch {torch.__version__}",
    }
