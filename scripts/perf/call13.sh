#!/usr/bin/env bash
# Call 13 (session 3): call 12's 300 s run memorised its 11 M-token train split (train loss 0.008, val_bpb 2.48).
# So: a train split as large as the device's source text allows (up to 600 MB, about one pass in 120 s), then
# the template (fp32 residual) against the bf16 residual stream, 120 s each, same data.
set -u
L=/tmp/logs; mkdir -p $L
export PYTHONUNBUFFERED=1 AUTORESEARCH_CACHE=/tmp/ar-cache
SP=/opt/torch/.venv/lib/python3.12/site-packages; D=/tmp/big
T0=$(date +%s); el() { echo "[t=$(( $(date +%s) - T0 ))s] $*"; }
left() { echo $(( ${1:-575} - $(date +%s) + T0 )); }
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu,driver_version --format=csv,noheader
python3 scripts/make_corpus.py $SP:/usr/local/cuda/include:/usr/include:/usr/share $D --train-mb 600 --val-mb 110 --ext py,h,hpp,cuh,txt,md,rst --val-first > $L/prepare.log 2>&1 && python3 -m nanochat.prepare --profile h100 --data $D >> $L/prepare.log 2>&1; el prepared; grep -E "make_corpus|tokens" $L/prepare.log
python3 scripts/perf/make_variants.py /tmp/var > /dev/null; cp nanochat/train.py /tmp/var/train_template.py
B="python3 -m nanochat.bench --profile h100 --data $D --log-dir $L --runs 1 --time-budget 120"
for v in template bf16resid; do
  el $v left=$(left); [ $(left) -gt 170 ] && timeout $(( $(left) - 5 )) $B --train /tmp/var/train_$v.py --label $v-120 2>&1 | tail -1
done
el done; tar czf $OUT/logs.tgz -C $L .
