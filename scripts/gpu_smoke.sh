#!/usr/bin/env bash
# First measurement of the template on a GPU machine with no internet: prepare a local corpus,
# run train.py at the h100 profile twice (cold, then warm compile cache). Usage:
#   bash scripts/gpu_smoke.sh DATA_PATH [BUDGET]       (logs under $OUT or ./gpu-logs)
set -uo pipefail
DATA="${1:?data path}"; BUDGET="${2:-60}"
LOGS="${OUT:-gpu-logs}"; mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1 AUTORESEARCH_CACHE="${AUTORESEARCH_CACHE:-/tmp/ar-cache}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
/usr/bin/time -v python3 -m nanochat.prepare --profile h100 --data "$DATA" 2>&1 | grep -E "prepare|Elapsed|Maximum resident" | tee "$LOGS/prepare.log"
timeout 560 python3 -m nanochat.train --profile h100 --data "$DATA" --time-budget "$BUDGET" > "$LOGS/run_cold.log" 2>&1
echo "cold run rc=$?"; grep -E "^(model|batch|step 0000[1-9]|step 000[1-9]0 |step .*0 \|)" "$LOGS/run_cold.log" | tail -8; sed -n '/^---$/,$p' "$LOGS/run_cold.log"; grep -iE "error|Traceback" "$LOGS/run_cold.log" | head -5
