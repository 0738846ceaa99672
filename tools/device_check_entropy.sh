#!/bin/sh
# One-call device check of the CUDA entropy gate (see tools/device_check_entropy.py):
#   builds eager_core._C with its CUDA kernel (sm_90 by default), then checks correctness
#   against the float64 reference and benchmarks against the PyTorch reference.
# On the device tool:  run(command="sh tools/device_check_entropy.sh", timeout_s=540)
# Results: stdout, and $OUT/entropy_device_check.json + $OUT/build.log when OUT is set.
set -e
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export EAGER_CORE_STRICT_BUILD=1 PYTHONUNBUFFERED=1 MAX_JOBS="${MAX_JOBS:-16}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# A CPU-only build carried over from another machine must not shadow the CUDA one.
rm -rf eager_core/_C*.so build
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
nvcc --version | tail -1
start=$(date +%s)
if ! python3 setup.py build_ext --inplace > "$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"
  exit 1
fi
echo "build: $(( $(date +%s) - start )) s"
nvcc -c -arch=sm_90 -O3 -Xptxas -v csrc/entropy_gate_cuda.cu -o /tmp/eg.o 2>&1 | grep -E "registers|spill" | sort | uniq -c
python3 tools/device_check_entropy.py --out "$OUT"
