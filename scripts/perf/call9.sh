#!/usr/bin/env bash
# (scripts/perf/train_prev.py, "prev", was `git show c3b5c9f:nanochat/train.py`: the template before this session; deleted after.)
# Call 9 (session 2): why do the compiled and eager paths end apart at 40 steps? Seed 42, default recipe
# (call 7 had: compiled 2.1475/2.1504, eager bf16 2.0896). Variants: whole-model compile, fp32 residual
# (compiled), compiled with eager's bf16 rounding, the previous template, and the fp32 eager reference.
set -u
L=/tmp/logs; mkdir -p $L
export PYTHONUNBUFFERED=1 AUTORESEARCH_CACHE=/tmp/ar-cache
SP=/opt/torch/.venv/lib/python3.12/site-packages; D=/tmp/evc
T0=$(date +%s); el() { echo "[t=$(( $(date +%s) - T0 ))s] $*"; }
left() { echo $(( ${1:-578} - $(date +%s) + T0 )); }
python3 scripts/make_corpus.py $SP $D --train-mb 40 --val-mb 110 > $L/prepare.log 2>&1 && python3 -m nanochat.prepare --profile h100 --data $D >> $L/prepare.log 2>&1; el prepared
python3 scripts/perf/make_variants.py /tmp/var > /dev/null
B="python3 -m nanochat.bench --profile h100 --data $D --log-dir $L --time-budget 100000 --set MAX_STEPS=40 --runs 1"
for v in whole fp32resid emulate; do el $v; timeout 90 $B --train /tmp/var/train_$v.py --label $v 2>&1 | tail -1; done
el prev; timeout 100 $B --train scripts/perf/train_prev.py --no-prestart --label prev 2>&1 | tail -1
el fp32 left=$(left); timeout $(left) $B --train /tmp/var/train_fp32.py --label fp32ref 2>&1 | tail -1
el done; tar czf $OUT/logs.tgz -C $L .
