#!/usr/bin/env bash
# Benchmark 4 of issue 5: on a machine with an NVIDIA GPU, install the project into a venv,
# confirm TensorFlow sees the GPU and that the LSTM takes the cuDNN kernel, then run
# benchmark 2 (bench/seed.py --speed-only) on the GPU and on the CPU side by side.
# Without a GPU it says so and exits 0.
#
#   bash bench/gpu_check.sh                 # from the repository root
#   SEED_EPOCHS=50 bash bench/gpu_check.sh  # a shorter run of the seed's 200-epoch setup
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: skipped - no NVIDIA GPU here (nvidia-smi absent or finds no device)"
    exit 0
fi
nvidia-smi -L

VENV="${GPU_CHECK_VENV:-/tmp/cddf-gpu-venv}"
SEED_EPOCHS="${SEED_EPOCHS:-200}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    # system site packages: reuse a preinstalled TensorFlow when there is no network
    "$PYTHON" -m venv --system-site-packages "$VENV"
fi
if ! "$VENV/bin/python" -c "import tensorflow" >/dev/null 2>&1; then
    "$VENV/bin/pip" install --quiet "tensorflow[and-cuda]>=2.16" \
        || { echo "gpu_check: failed - TensorFlow is not installed and cannot be installed"; exit 1; }
fi
"$VENV/bin/pip" install --quiet --no-deps --no-build-isolation -e . \
    || "$VENV/bin/pip" install --quiet -e .

"$VENV/bin/python" - <<'EOF'
import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
import numpy as np
import tensorflow as tf

gpus = tf.config.list_physical_devices("GPU")
print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, GPUs: {gpus}")
if not gpus:
    raise SystemExit("gpu_check: failed - nvidia-smi sees a GPU but TensorFlow does not")
# use_cudnn=True raises unless the cuDNN kernel is taken; the default "auto" then takes it too
layer = keras.layers.LSTM(256, use_cudnn=True)
model = keras.Sequential([keras.Input((7, 1)), layer, keras.layers.Dense(1)])
model.compile(optimizer="adam", loss="mse")
model.fit(np.zeros((64, 7, 1)), np.zeros((64, 1)), epochs=1, verbose=0)
print("cuDNN LSTM kernel: ok (LSTM(use_cudnn=True) trained on", gpus[0].name + ")")
EOF

echo
echo "=== benchmark 2 on the GPU ==="
"$VENV/bin/python" bench/seed.py --speed-only --seed-epochs "$SEED_EPOCHS"
echo
echo "=== benchmark 2 on the CPU (CUDA_VISIBLE_DEVICES=\"\") ==="
CUDA_VISIBLE_DEVICES="" "$VENV/bin/python" bench/seed.py --speed-only --seed-epochs "$SEED_EPOCHS"
