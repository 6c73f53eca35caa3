#!/usr/bin/env bash
# The GPU checks, as one script for a lent GPU machine (see benchmarks/README.md, "GPU").
#
# The machine has no network: ftlab's dependencies that its image lacks or holds in other versions
# travel as wheels in .whl/ (bitsandbytes unpacked in .whl/site, trimmed to its CUDA 13.0 and CPU
# libraries), with SmolLM2-135M's config and tokenizer in .whl/smollm2-shape. Its 538 MB of weights
# cannot travel, so the memory check builds the same architecture with random weights: a training
# step's memory depends on the shapes, not on the values. Writes everything to $OUT.
set -u
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 FTLAB_CACHE=/tmp/ftlab-cache FTLAB_RUNS=/tmp/ftlab-runs
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/.whl/site:$PWD
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda)"; } | tee "$OUT/machine.txt"

echo "== ftlab doctor"
{ python3 benchmarks/provenance.py; python3 -m ftlab.cli.main doctor 2>&1; } | tee "$OUT/doctor.txt"

echo "== a SmolLM2-135M-shaped model with random weights"
python3 - <<'EOF' 2>&1 | tail -2
from transformers import AutoConfig, AutoModelForCausalLM
config = AutoConfig.from_pretrained(".whl/smollm2-shape")
AutoModelForCausalLM.from_config(config).save_pretrained(".whl/smollm2-shape")
print("saved", sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters()), "parameters")
EOF

# SIZES and TESTS narrow a second run ("16x512", a test file) when the device time left is short
for size in ${SIZES:-4x128 16x512}; do
  set -- ${size/x/ }
  echo "== memory predictor against torch.cuda.max_memory_allocated, batch $1 x $2"
  timeout 240 python3 benchmarks/memory_predictor.py --models tiny ./.whl/smollm2-shape --batch "$1" --seq "$2" 2>&1 \
    | grep -v -e Warning -e warn -e "Loading weights" | tee "$OUT/memory_predictor_$1x$2.txt"
  cp benchmarks/results/memory_predictor_cuda.json "$OUT/memory_predictor_cuda_$1x$2.json" 2>/dev/null
done

echo "== unit tests of training, memory and quantization on CUDA"
timeout 200 python3 -m pytest -q -x -p no:cacheprovider -o addopts="" ${TESTS:-tests/test_train.py tests/test_memory.py \
  tests/test_peak.py tests/test_quant.py tests/test_qlora_training.py} 2>&1 | tail -25 | tee "$OUT/pytest.txt"
