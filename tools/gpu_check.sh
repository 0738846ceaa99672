#!/bin/sh
# The whole GPU check in one call on a lent device (see tools/gpu_check.py and device_check_entropy.py):
#   1. build eager_core._C with its CUDA kernel (sm_90);
#   2. engine on CUDA: greedy tokens vs CPU (with and without CUDA graphs), EAGer trees, decode speed
#      vs transformers, bandwidth;
#   3. the CUDA tests of the suite (they skip without a GPU; here EAGER_CORE_REQUIRE_CUDA=1 makes a build
#      without the CUDA kernel fail them): decode graphs, NaN isolation, the entropy kernel, EAGer on CUDA,
#      the weight-only int8 kernel and an int8 model on CUDA against CPU;
#   4. the fused entropy kernel: correctness vs float64 and speed vs the PyTorch reference.
# Every stage runs even if an earlier one failed. On the device tool:
#   run(command="sh tools/gpu_check.sh", timeout_s=540)
# Results: stdout, and under $OUT: gpu_check.json, entropy_device_check.json, build.log, pytest.log.
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/eager_core_gpu_out}"
mkdir -p "$OUT"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export EAGER_CORE_STRICT_BUILD=1 PYTHONUNBUFFERED=1 MAX_JOBS="${MAX_JOBS:-16}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
# A CPU-only build carried over from another machine must not shadow the CUDA one.
rm -rf eager_core/_C*.so build
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,memory.used --format=csv,noheader
if python3 setup.py build_ext --inplace > "$OUT/build.log" 2>&1; then stamp "build ok"; else
  tail -30 "$OUT/build.log"; stamp "BUILD FAILED (the checks go on with the PyTorch entropy fallback)"; fi
python3 tools/gpu_check.py --json "$OUT/gpu_check.json" 2>&1 | grep -v Warning | tail -n 80
stamp "gpu_check done"
EAGER_CORE_REQUIRE_CUDA=1 python3 -m pytest -q -rs -p no:cacheprovider tests/engine/test_decode_graphs.py \
  tests/engine/test_cuda_decode.py tests/engine/test_nan_isolation.py tests/ops/test_entropy_cuda.py \
  tests/eager/test_eager_cuda.py tests/ops/test_int8_cuda.py > "$OUT/pytest.log" 2>&1
grep -E "^(FAILED|ERROR|SKIPPED)" "$OUT/pytest.log" | head -20; tail -1 "$OUT/pytest.log"; stamp "pytest done"
python3 tools/device_check_entropy.py --out "$OUT" > "$OUT/entropy.log" 2>&1
grep -E "^FAIL|correctness:|copy|B=|wrote" "$OUT/entropy.log" | tail -n 40
stamp "all done"
