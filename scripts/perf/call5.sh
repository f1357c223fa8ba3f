#!/usr/bin/env bash
# Call 5: the pre-tuning template (compiled), same fixed 40 steps: seed 42 twice, seed 1 once.
set -u
L=/tmp/logs; mkdir -p $L
export PYTHONUNBUFFERED=1 AUTORESEARCH_CACHE=/tmp/ar-cache
SP=/opt/torch/.venv/lib/python3.12/site-packages; D=/tmp/evc
T0=$(date +%s); el() { echo "[t=$(( $(date +%s) - T0 ))s] $*"; }
python3 scripts/make_corpus.py $SP $D --train-mb 40 --val-mb 110 > $L/prepare.log 2>&1 && python3 -m nanochat.prepare --profile h100 --data $D >> $L/prepare.log 2>&1; el prepared
B="python3 -m nanochat.bench --profile h100 --data $D --log-dir $L --time-budget 100000 --set MAX_STEPS=40 --set UNTIMED_STEPS=1 --train scripts/perf/train_base.py"
el base42; timeout 250 $B --runs 2 --label base40-seed42 2>&1 | tail -4
el base1; timeout 120 $B --runs 1 --set SEED=1 --label base40-seed1 2>&1 | tail -3
el done; tar czf $OUT/logs.tgz -C $L .
