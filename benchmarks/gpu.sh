#!/usr/bin/env bash
# GPU checks for a machine with CUDA: the gpu-marked tests, then the benchmark suite and the
# gradient-mode benchmark on the device, then out-of-core training, within about 10 minutes. Installs nothing beyond the
# project itself (its dependencies must already be there). Results go to $OUT if set, else
# to benchmarks/results/.
#
#   bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
python -c "import latentode" 2>/dev/null || pip install --quiet --no-deps -e .
python - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device visible to PyTorch"
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
PY
# the tests that need a device (about a minute)
timeout 180 python -m pytest -q -m gpu -p no:cacheprovider
# speed and accuracy at a fixed budget on CUDA, native against torchdiffeq (a few minutes)
timeout 300 python benchmarks/suite.py --device cuda --configs spiral periodic \
    --spiral-iterations 100 --periodic-epochs 3 --output "$out/suite_cuda.json"
echo "wrote $out/suite_cuda.json"
# the spiral model with its networks in bfloat16 (solves in float32), against the run above
timeout 150 python benchmarks/suite.py --device cuda --configs spiral --backends native \
    --precision bf16-mixed --spiral-iterations 100 --output "$out/suite_cuda_bf16.json"
echo "wrote $out/suite_cuda_bf16.json"
# out-of-core training on the device: 20,000 series streamed from Parquet (about two minutes)
timeout 240 python benchmarks/out_of_core.py --device cuda --series 20000 --subset 5000 \
    --workers 2 --output "$out/out_of_core_cuda.json"
echo "wrote $out/out_of_core_cuda.json"
