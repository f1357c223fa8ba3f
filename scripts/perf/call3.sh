#!/usr/bin/env bash
# Call 3: final figures (cold + warm), correctness (fast vs plain path, fixed 40 steps, twice each), baseline.
set -u
L=/tmp/logs; mkdir -p $L
export PYTHONUNBUFFERED=1 AUTORESEARCH_CACHE=/tmp/ar-cache
SP=/opt/torch/.venv/lib/python3.12/site-packages; D=/tmp/evc
T0=$(date +%s); el() { echo "[t=$(( $(date +%s) - T0 ))s] $*"; }
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu,driver_version --format=csv,noheader
python3 scripts/make_corpus.py $SP $D --train-mb 40 --val-mb 110 > $L/prepare.log 2>&1 && python3 -m nanochat.prepare --profile h100 --data $D >> $L/prepare.log 2>&1; el prepared; tail -1 $L/prepare.log
B="python3 -m nanochat.bench --profile h100 --data $D --log-dir $L"
el final; timeout 220 $B --time-budget 25 --runs 2 --cold --label final 2>&1 | tail -4
el fast; timeout 120 $B --time-budget 100000 --set MAX_STEPS=40 --runs 2 --label fast40 2>&1 | tail -4
el plain; PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True timeout 200 $B --time-budget 100000 --set MAX_STEPS=40 --set COMPILE=False --runs 2 --label plain40 2>&1 | tail -4
left=$(( 580 - $(date +%s) + T0 )); el base left=$left; [ $left -gt 100 ] && timeout $left $B --time-budget 25 --runs 1 --train scripts/perf/train_base.py --label base 2>&1 | tail -3
el done; tar czf $OUT/logs.tgz -C $L .
