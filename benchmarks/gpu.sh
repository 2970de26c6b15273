#!/usr/bin/env bash
# GPU checks for a machine with CUDA, within about 10 minutes: the gpu-marked tests, the
# benchmark suite on the device (native solver against torchdiffeq), the spiral model with its
# networks in bfloat16, prediction throughput on PhysioNet stays (when a folder holding
# set-a.tar.gz is given) and out-of-core training streamed from Parquet. Each step runs under its
# own time limit; a step that fails is reported and the others still run, and the script exits
# non-zero if any failed. Installs nothing: the project's dependencies must already be there, and
# the source tree is put first on PYTHONPATH. Results go to $OUT if set, else to
# benchmarks/results/.
#
#   bash benchmarks/gpu.sh [PHYSIONET_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
physionet="${1:-}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python - <<'PY' || exit 1
import torch
assert torch.cuda.is_available(), "no CUDA device visible to PyTorch"
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
PY

failed=()
step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "== $name (at most ${limit} s)"
    local start=$SECONDS
    if timeout "$limit" "$@"; then
        echo "== $name: done in $((SECONDS - start)) s"
    else
        echo "!! $name: failed (status $?) after $((SECONDS - start)) s"
        failed+=("$name")
    fi
}

# the tests that need a device
step "gpu tests" 150 python -m pytest -q -m gpu -p no:cacheprovider
# speed and accuracy at a fixed budget on CUDA, native against torchdiffeq
step "suite" 180 python benchmarks/suite.py --device cuda --configs spiral periodic \
    --spiral-iterations 100 --periodic-epochs 3 --output "$out/suite_cuda.json"
# prediction throughput for PhysioNet stays on the device
if [[ -n "$physionet" ]]; then
    step "prediction throughput" 150 python benchmarks/prediction_throughput.py --device cuda \
        --physionet-path "$physionet" --output "$out/prediction_throughput_cuda.json"
fi
# the spiral model with its networks in bfloat16 (solves in float32), against the suite's run
step "bf16" 70 python benchmarks/suite.py --device cuda --configs spiral --backends native \
    --precision bf16-mixed --spiral-iterations 100 --output "$out/suite_cuda_bf16.json"
# out-of-core training on the device: 10,000 series streamed from Parquet
step "out of core" 90 python benchmarks/out_of_core.py --device cuda --series 10000 \
    --subset 2500 --workers 2 --output "$out/out_of_core_cuda.json"

ls -l "$out"
if ((${#failed[@]})); then
    echo "failed: ${failed[*]}"
    exit 1
fi
echo "all steps passed"
