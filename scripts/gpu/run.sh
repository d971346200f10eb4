#!/usr/bin/env bash
# The GPU checks of issue 6 (and the CUDA training test), as one script for a lent GPU machine (scripts/gpu/boot.py says why
# it boots that way). Results: $OUT (or runs/gpu) bench_*.json and gpu.log. Run
# scripts/gpu/bundle.sh first on the development machine.
set -uo pipefail
cd "$(dirname "$0")/../.."
O=${OUT:-runs/gpu}; mkdir -p "$O/paper" "$O/small" "$O/model"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
B="python3 scripts/gpu/boot.py"
{
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -c "import torch, onnxruntime; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'onnxruntime', onnxruntime.__version__)"
python3 -c "import tensorrt" 2>&1 | tail -1
echo "== paper preset: value chunk =="
$B wvm bench chunk --preset paper --device cuda --precision bf16 --iters 30 --output "$O/paper"
echo "== small preset: value chunk =="
$B wvm bench chunk --preset small --device cuda --precision fp16 --iters 100 --output "$O/small"
echo "== small preset: streaming estimator vs naive, torch fp16 + CUDA graphs =="
$B wvm bench model --preset small --device cuda --precision fp16 --backends torch --cuda-graphs --cameras 3 --duration 3 --frame-size 480x640 --threads 4 --output "$O/model"
echo "== CUDA tests =="
$B pytest -q -p no:cacheprovider tests/test_backends.py tests/test_bench.py -rs
$B pytest -q -p no:cacheprovider tests/test_train.py tests/test_streaming.py -k cuda -rs
} 2>&1 | tee "$O/gpu.log"
