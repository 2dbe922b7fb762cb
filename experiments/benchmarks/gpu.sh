#!/usr/bin/env bash
# One prepared command for a lent GPU (one H200: under 8 minutes). Prints the table and leaves
# bench.json in $OUT (or ./bench_gpu). Record its numbers, with the date, in README.md.
#
#   bash experiments/benchmarks/gpu.sh
#
# Cases: bfloat16 SimCLR and BYOL ResNet-50 at 224 px (batch 256), DINO ViT-S/16 and ViT-B/16
# multi-crop, SimCLR ResNet-18 at 32 px, the InfoNCE loss dense vs chunked up to 65,536 views,
# view making and the input pipeline. Goals (issue 10): SimCLR ResNet-50 >= 2,000 images/s and
# DINO ViT-B/16 MFU >= 45%.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-bench_gpu}"
python -c "import jax; print(jax.devices())"
exec python experiments/benchmarks/run.py --suite=gpu --out="$OUT" --repeats=10 --warmup=3 \
  --cases="${CASES:-simclr_resnet50_224px,dino_vit_base16_multicrop,byol_resnet50_224px,dino_vit_small16_multicrop,simclr_resnet18_cifar32_bf16,loss_info_nce_dense_b16384,loss_info_nce_chunked1024_b65536,augment_two_views_224px,simclr_laptop_default,input_pipeline_shapes_32px}"
