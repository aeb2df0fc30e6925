#!/usr/bin/env bash
# One prepared device run (<= 8 minutes on one H200; no downloads: it uses the image's torch, torchvision and
# transformers and this repo's source). Prints one table per part; tee everything to $OUT when it is set.
#   bash scripts/device_check.sh            (from the repository root)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
LOG=${OUT:-/tmp}/device_check.log
PY=${PY:-python3}
run() { echo; echo "## $*"; timeout "${PART_TIMEOUT:-240}" "$@" 2>&1 | grep -v Warning; echo "(exit ${PIPESTATUS[0]})"; }
{
  echo "# device check $(date -u +%F' '%T) UTC"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  $PY -c "import torch, torchvision, transformers; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__)"
  run $PY scripts/tf32_probe.py
  # the user's global TF32 switches stay on during the checks: the explanation must turn them off itself
  run $PY -c "import torch; torch.backends.cuda.matmul.allow_tf32 = True; torch.backends.cudnn.allow_tf32 = True; import runpy, sys; sys.argv = ['gpu_check.py', '--size', '64']; runpy.run_path('scripts/gpu_check.py', run_name='__main__')"
  run $PY -m pytest -q -x -p no:cacheprovider tests/engine/test_device.py
  run $PY benchmarks/explain_vs_forward.py --device cuda --threads 16 --runs 5 --models resnet50 vit_b_16 bert_base llama_0.5b
  run $PY benchmarks/explain_vs_forward.py --device cuda --threads 16 --runs 5 --precision fast --models resnet50 vit_b_16 bert_base llama_0.5b
  run $PY benchmarks/explain_vs_forward.py --device cuda --threads 16 --runs 5 --dtype bfloat16 --precision fast --models resnet50 bert_base llama_0.5b
  run $PY benchmarks/gpu_profile.py --models resnet50 bert_base llama_0.5b
  PART_TIMEOUT=200 run $PY benchmarks/llm_probe.py --layers 32 --tokens 512 --runs 3
  for b in 8 32; do run $PY benchmarks/batch_scaling.py --device cuda --batch $b 2>/dev/null; done
} 2>&1 | tee "$LOG"
