#!/usr/bin/env bash
# Call 11 (session 3): where the fp32-residual template's step goes (kernel profile), then the levers left:
# bf16 x0, nested compile regions (one graph, blocks traced once), coordinate-descent tuning, max-autotune.
set -u
L=/tmp/logs; mkdir -p $L
export PYTHONUNBUFFERED=1 AUTORESEARCH_CACHE=/tmp/ar-cache
SP=/opt/torch/.venv/lib/python3.12/site-packages; D=/tmp/evc
T0=$(date +%s); el() { echo "[t=$(( $(date +%s) - T0 ))s] $*"; }
left() { echo $(( ${1:-575} - $(date +%s) + T0 )); }
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu,driver_version --format=csv,noheader
python3 scripts/make_corpus.py $SP $D --train-mb 40 --val-mb 110 > $L/prepare.log 2>&1 && python3 -m nanochat.prepare --profile h100 --data $D >> $L/prepare.log 2>&1; el prepared
python3 scripts/perf/make_variants.py /tmp/var > /dev/null
B="python3 -m nanochat.bench --profile h100 --data $D --log-dir $L --time-budget 15 --runs 1"
el kprof; mkdir -p /tmp/kp && cp nanochat/train.py /tmp/kp/ && python3 -c "from nanochat.prepare import HarnessConfig; HarnessConfig(profile='h100', data='$D', time_budget=10).write('/tmp/kp/harness.json')"
timeout 100 python3 scripts/kernel_profile.py /tmp/kp --top 45 --out $L/kprof_final.json > $L/kprof_final.log 2>&1; tail -47 $L/kprof_final.log | cut -c1-150
for v in x0bf16 nested coord autotune; do
  el $v left=$(left); [ $(left) -gt 60 ] && timeout $(( $(left) - 10 )) $B --train /tmp/var/train_$v.py --label $v 2>&1 | tail -1
done
el done; tar czf $OUT/logs.tgz -C $L .
