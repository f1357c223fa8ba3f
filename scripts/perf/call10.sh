#!/usr/bin/env bash
# Call 10 (session 2): the template as merged (fp32 residual stream, per-block compile, full context):
# figures cold + warm with prestart, warm without it; correctness at 40 steps (seed 42): fast path twice,
# plain eager bf16, gradient probe, and the fp32 eager reference if time is left.
set -u
L=/tmp/logs; mkdir -p $L
export PYTHONUNBUFFERED=1 AUTORESEARCH_CACHE=/tmp/ar-cache
SP=/opt/torch/.venv/lib/python3.12/site-packages; D=/tmp/evc
T0=$(date +%s); el() { echo "[t=$(( $(date +%s) - T0 ))s] $*"; }
left() { echo $(( ${1:-578} - $(date +%s) + T0 )); }
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu,driver_version --format=csv,noheader
python3 scripts/make_corpus.py $SP $D --train-mb 40 --val-mb 110 > $L/prepare.log 2>&1 && python3 -m nanochat.prepare --profile h100 --data $D >> $L/prepare.log 2>&1; el prepared
B="python3 -m nanochat.bench --profile h100 --data $D --log-dir $L"
el final; timeout 220 $B --time-budget 25 --runs 2 --cold --label final 2>&1 | tail -3
el noprestart; timeout 80 $B --time-budget 25 --runs 1 --no-prestart --label final-noprestart 2>&1 | tail -1
S="--time-budget 100000 --set MAX_STEPS=40"
el fast40; timeout 110 $B $S --runs 2 --label fast40 2>&1 | tail -2
el eager40; timeout 100 $B $S --runs 1 --set COMPILE=False --label eager40 2>&1 | tail -1
el grad_probe; timeout 80 python3 scripts/perf/grad_probe.py --profile h100 --data $D --rows 8 --out $L/grad_probe.json > $L/grad_probe.log 2>&1; grep -v Warn $L/grad_probe.log | tail -40
python3 scripts/perf/make_variants.py /tmp/var > /dev/null
el fp32 left=$(left); [ $(left) -gt 170 ] && timeout $(left) $B $S --runs 1 --train /tmp/var/train_fp32.py --label fp32ref 2>&1 | tail -1
el done; tar czf $OUT/logs.tgz -C $L .
