#!/bin/sh
# Compile-check the CUDA kernels alone (they include no torch header), as CI does:
#   nvcc -c -arch=sm_90 csrc/entropy_gate_cuda.cu csrc/int8_linear_cuda.cu
# Exits 0 with "nvcc not found, skipped" on machines without nvcc.
set -e
cd "$(dirname "$0")/.."
NVCC="${NVCC:-nvcc}"
if ! command -v "$NVCC" >/dev/null 2>&1; then
  if [ -n "$CUDA_HOME" ] && [ -x "$CUDA_HOME/bin/nvcc" ]; then
    NVCC="$CUDA_HOME/bin/nvcc"
  else
    echo "nvcc not found, skipped"
    exit 0
  fi
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"$NVCC" -c -arch=sm_90 -O3 -Icsrc csrc/entropy_gate_cuda.cu -o "$out/entropy_gate_cuda.o"
echo "nvcc compile check passed: csrc/entropy_gate_cuda.cu (sm_90)"
"$NVCC" -c -arch=sm_90 -O3 -Icsrc csrc/int8_linear_cuda.cu -o "$out/int8_linear_cuda.o"
echo "nvcc compile check passed: csrc/int8_linear_cuda.cu (sm_90)"
