#!/usr/bin/env bash
# Everything this project checks on a lent GPU, in one command (a few minutes):
# GPU correctness of the core (the reference trajectories, float16 FTP, TPGM's long
# float32 runs, inject_hyperparams), then the update-only and full-step benchmarks, then
# the real recipe's step (CLIP RN50, batch 256, bfloat16) fed by the real input
# pipeline vs on-device batches, for FTP and vanilla (issue #14: FTP's full-step
# overhead on the GPU and the input-bound fraction).
# Usage (on the GPU machine, repository root; OUT = where results go):
#   OUT=/tmp/out bash benchmarks/gpu_session.sh
set -uo pipefail
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1 JAX_PLATFORMS=cuda
OUT="${OUT:-/tmp/ftp_jax_gpu}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
nvidia-smi -L | tee "$OUT/gpu_machine.txt"
"$PY" -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" | tee -a "$OUT/gpu_machine.txt"
timeout 200 "$PY" -m pytest -q -p no:xdist -p no:cacheprovider tests/test_ftp.py tests/test_tpgm.py tests/test_projection.py \
  -k "Golden or LowPrecision or inject or HardClip or Behaviour" 2>&1 | tail -25 | tee "$OUT/gpu_tests.txt"
timeout 240 "$PY" benchmarks/update_step.py --device gpu --rounds 20 --warmup 3 \
  --out "$OUT/update_step_gpu.json" 2>&1 | tail -40
timeout 300 "$PY" benchmarks/train_step.py --device gpu --batch-size 128 --image-size 224 \
  --rounds 10 --warmup 2 --out "$OUT/train_step_gpu.json" 2>&1 | tail -40
for method in ftp vanilla; do
  timeout 300 "$PY" benchmarks/recipe_throughput.py --device gpu --model clip_rn50 \
    --batch-size 256 --method "$method" \
    --out "$OUT/recipe_throughput_gpu_clip_rn50_$method.json" 2>&1 | tail -20
done
ls -la "$OUT"
