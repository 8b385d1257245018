#!/usr/bin/env bash
# GPU benchmark of the encoders on onnxruntime's CUDA provider: a random-init ViT-B-32 bundle, fp32 and
# fp16, raw images/s and texts/s by batch size, then the real services (batched) at 1, 32 and 128 clients.
#
# Run once from the repository root on a CUDA machine with pip access (or a wheel folder):
#     OUT=/tmp/gpu-results bash bench/gpu_encoders.sh
# It builds its own virtualenv in $WORK (default /tmp/crossmodal-gpu), installs the package with the
# `export` extra plus onnxruntime-gpu in place of onnxruntime, exports the bundle (about a minute, on
# the CPU), runs bench/bench_encoders.py with CROSSMODAL_ENCODER_PROVIDERS=cuda and writes
# $OUT/encoders.json, $OUT/encoders.md and $OUT/gpu_encoders.log.
#
# Settings (environment): OUT (required), WORK, PYTHON (default python3), WHEELS (a folder of wheels to
# install from offline instead of PyPI), ORT_GPU_SPEC (default onnxruntime-gpu>=1.31,<2), SKIP_SERVED=1
# (raw figures only).
set -euo pipefail

: "${OUT:?set OUT to the folder that receives the results}"
WORK=${WORK:-/tmp/crossmodal-gpu}
PYTHON=${PYTHON:-python3}
ORT_GPU_SPEC=${ORT_GPU_SPEC:-onnxruntime-gpu>=1.31,<2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT" "$WORK"
exec > >(tee "$OUT/gpu_encoders.log") 2>&1

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "nvidia-smi not found"
"$PYTHON" --version

echo "== virtualenv in $WORK/venv"
if [ ! -x "$WORK/venv/bin/python" ]; then
  "$PYTHON" -m venv "$WORK/venv"
fi
PY="$WORK/venv/bin/python"
pip_install() {
  if [ -n "${WHEELS:-}" ]; then
    "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" "$@"
  else
    "$PY" -m pip install --quiet "$@"
  fi
}
pip_install --upgrade pip
constraints=()
[ -f "$ROOT/constraints.txt" ] && constraints=(-c "$ROOT/constraints.txt")
pip_install "${constraints[@]}" -e "$ROOT[export]" onnxconverter-common
# onnxruntime and onnxruntime-gpu install the same module: only one may be present.
"$PY" -m pip uninstall --yes --quiet onnxruntime || true
pip_install "$ORT_GPU_SPEC"
"$PY" - <<'EOF'
import onnxruntime as ort
providers = ort.get_available_providers()
print("onnxruntime", ort.__version__, providers)
if "CUDAExecutionProvider" not in providers:
    raise SystemExit("the CUDA execution provider is not available: check the CUDA and cuDNN libraries")
EOF

echo "== export: random-init ViT-B-32 with an fp16 variant"
BUNDLE="$WORK/vit-b-32-random"
if [ ! -f "$BUNDLE/model.json" ]; then
  (cd "$ROOT" && "$PY" -c "import sys; from crossmodal.cli import main; sys.exit(main(sys.argv[1:]))" \
    export-model "$BUNDLE" --arch ViT-B-32 --precision fp16 --overwrite)
fi

echo "== benchmark"
served=()
if [ "${SKIP_SERVED:-0}" = "1" ]; then
  served=(--raw-only)
fi
cd "$ROOT"
"$PY" bench/bench_encoders.py --bundle "$BUNDLE" --providers cuda,cpu --precisions fp32,fp16 \
  --batches 8,16,32,64,256 --max-batch 128 --clients 1,32,128 --no-unbatched \
  --duration 10 --warmup 3 --raw-seconds 5 --out "$OUT" "${served[@]}"
echo "== done: results in $OUT"
