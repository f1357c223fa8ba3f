#!/usr/bin/env bash
# Call 4: correctness, paired by seed (40 fixed steps): fast path vs plain path for seeds 1 and 2 (42 was call 3),
# compiled+SDPA-mask (no flex) and the pre-tuning template (compiled) at seed 42.
set -u
L=/tmp/logs; mkdir -p $L
export PYTHONUNBUFFERED=1 AUTORESEARCH_CACHE=/tmp/ar-cache
SP=/opt/torch/.venv/lib/python3.12/site-packages; D=/tmp/evc
T0=$(date +%s); el() { echo "[t=$(( $(date +%s) - T0 ))s] $*"; }
python3 scripts/make_corpus.py $SP $D --train-mb 40 --val-mb 110 > $L/prepare.log 2>&1 && python3 -m nanochat.prepare --profile h100 --data $D >> $L/prepare.log 2>&1; el prepared; tail -1 $L/prepare.log
B="python3 -m nanochat.bench --profile h100 --data $D --log-dir $L --runs 1 --time-budget 100000 --set MAX_STEPS=40"
for s in 1 2; do
  el fast$s; timeout 150 $B --set SEED=$s --label fast40-seed$s 2>&1 | tail -3
  el plain$s; PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True timeout 120 $B --set SEED=$s --set COMPILE=False --label plain40-seed$s 2>&1 | tail -3
done
sed 's/model.setup_attention(device, flex=fast)/model.setup_attention(device, flex=False)/' nanochat/train.py > /tmp/train_nofl.py; grep -c "flex=False" /tmp/train_nofl.py
left=$(( 570 - $(date +%s) + T0 )); el nofl left=$left; [ $left -gt 90 ] && timeout 120 $B --train /tmp/train_nofl.py --label compiled-sdpamask40 2>&1 | tail -3
left=$(( 570 - $(date +%s) + T0 )); el base left=$left; [ $left -gt 80 ] && timeout $left $B --train scripts/perf/train_base.py --set UNTIMED_STEPS=1 --label base40 2>&1 | tail -3
el done; tar czf $OUT/logs.tgz -C $L .
