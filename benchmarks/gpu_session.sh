#!/usr/bin/env bash
# Everything this project checks on a lent GPU, in one command of under 8 minutes (each
# step has its own timeout; the sum is 460 s plus start-up), written for the next session
# that has a GPU (issue 24). Run it whenever a GPU is lent and commit the JSON it writes
# (copy $OUT/*.json to benchmarks/results/; benchmarks/RESULTS_LAYOUT.md says how to read
# them):
#  1. GPU correctness of the core: the reference trajectories (leaves layout in
#     test_ftp, buckets layout in test_layout), float16 FTP, the layouts against the
#     per-leaf code.
#  2. state_layout.py: FTP's update step in the per-leaf state before issue 24
#     (benchmarks/_ftp_per_leaf.py), layout="leaves" and layout="buckets", next to
#     sgd+momentum and adamw, on ResNet-50 and ViT-B/16 trees: arrays, kernels, bytes,
#     times (the update benchmark for the old and new layouts).
#  3. dispatch_probe.py: per-buffer vs per-kernel fixed cost (many donated 0-D arrays vs
#     one vector; many small kernels on one array).
#  4. train_step.py: the full ResNet-50 step, batch 128, ftp's default on the GPU
#     ("auto" = buckets) and layout="leaves" rows, next to the bases.
#  5. recipe_throughput.py: the CLIP RN50 DomainNet recipe's step (batch 256, bfloat16)
#     for FTP and vanilla.
# Usage (on the GPU machine, repository root; OUT = where results go):
#   OUT=/tmp/out bash benchmarks/gpu_session.sh
set -uo pipefail
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1 JAX_PLATFORMS=cuda
OUT="${OUT:-/tmp/ftp_jax_gpu}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
nvidia-smi -L | tee "$OUT/gpu_machine.txt"
"$PY" -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" | tee -a "$OUT/gpu_machine.txt"
timeout 90 "$PY" -m pytest -q -x -p no:xdist -p no:cacheprovider tests/test_ftp.py tests/test_layout.py \
  -k "GoldenTrajectory or GoldenBuckets or LowPrecision or Agreement" 2>&1 | tail -15 | tee "$OUT/gpu_tests.txt"
for model in resnet50 vit_b16; do  # one JSON per model: a timeout keeps the first
  timeout 65 "$PY" benchmarks/state_layout.py --device gpu --rounds 20 --warmup 3 \
    --models "$model" --bases sgd+momentum,adamw --ftp-before benchmarks/_ftp_per_leaf.py \
    --out "$OUT/state_layout_gpu_$model.json" 2>&1 | tail -16
done
timeout 40 "$PY" benchmarks/dispatch_probe.py --device gpu --rounds 30 \
  --out "$OUT/dispatch_probe_gpu.json" 2>&1 | tail -16
timeout 100 "$PY" benchmarks/train_step.py --device gpu --batch-size 128 --image-size 224 \
  --rounds 8 --warmup 2 --ftp-layouts leaves --out "$OUT/train_step_gpu.json" 2>&1 | tail -30
for method in ftp vanilla; do
  timeout 50 "$PY" benchmarks/recipe_throughput.py --device gpu --model clip_rn50 \
    --batch-size 256 --method "$method" \
    --out "$OUT/recipe_throughput_gpu_clip_rn50_$method.json" 2>&1 | tail -12
done
ls -la "$OUT"
