#!/usr/bin/env bash
# Calls 12 and 13 (session 3): does the bf16 residual stream's loss at 40 steps hold at the real 300 s budget,
# where it buys ~11% more steps? Call 12: VARIANT=template; call 13: VARIANT=bf16resid. Then 40-step checks.
set -u
V=${1:-template}; shift
L=/tmp/logs; mkdir -p $L
export PYTHONUNBUFFERED=1 AUTORESEARCH_CACHE=/tmp/ar-cache
SP=/opt/torch/.venv/lib/python3.12/site-packages; D=/tmp/evc
T0=$(date +%s); el() { echo "[t=$(( $(date +%s) - T0 ))s] $*"; }
left() { echo $(( ${1:-575} - $(date +%s) + T0 )); }
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu,driver_version --format=csv,noheader
python3 scripts/make_corpus.py $SP $D --train-mb 40 --val-mb 110 > $L/prepare.log 2>&1 && python3 -m nanochat.prepare --profile h100 --data $D >> $L/prepare.log 2>&1; el prepared
python3 scripts/perf/make_variants.py /tmp/var > /dev/null; cp nanochat/train.py /tmp/var/train_template.py
B="python3 -m nanochat.bench --profile h100 --data $D --log-dir $L --runs 1"
el $V-300; timeout 420 $B --time-budget 300 --train /tmp/var/train_$V.py --label $V-300 2>&1 | tail -1
for v in "$@"; do
  el $v-40 left=$(left); [ $(left) -gt 60 ] && timeout $(( $(left) - 10 )) $B --time-budget 100000 --set MAX_STEPS=40 --train /tmp/var/train_$v.py --label $v-40 2>&1 | tail -1
done
el done; tar czf $OUT/logs.tgz -C $L .
