#!/usr/bin/env bash
# Call 8 (session 2): final figures of the template (cold + warm with prestart; warm without it, bytecode
# cache warm); correctness at a fixed 40 steps: fast vs plain eager, with a warm-up (seed 42) and without (seed 1).
set -u
L=/tmp/logs; mkdir -p $L
export PYTHONUNBUFFERED=1 AUTORESEARCH_CACHE=/tmp/ar-cache
SP=/opt/torch/.venv/lib/python3.12/site-packages; D=/tmp/evc
T0=$(date +%s); el() { echo "[t=$(( $(date +%s) - T0 ))s] $*"; }
left() { echo $(( ${1:-575} - $(date +%s) + T0 )); }
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu,driver_version --format=csv,noheader
python3 scripts/make_corpus.py $SP $D --train-mb 40 --val-mb 110 > $L/prepare.log 2>&1 && python3 -m nanochat.prepare --profile h100 --data $D >> $L/prepare.log 2>&1; el prepared; tail -1 $L/prepare.log
B="python3 -m nanochat.bench --profile h100 --data $D --log-dir $L"
el final; timeout 220 $B --time-budget 25 --runs 2 --cold --label final 2>&1 | tail -3
el noprestart; timeout 80 $B --time-budget 25 --runs 1 --no-prestart --label final-noprestart 2>&1 | tail -1
S="--time-budget 100000 --set MAX_STEPS=40"
W="--set WARMUP_RATIO=0.25"
el fast40w; timeout 70 $B $S $W --runs 1 --label fast40-warmup 2>&1 | tail -1
el eager40w; timeout 100 $B $S $W --runs 1 --set COMPILE=False --label eager40-warmup 2>&1 | tail -1
el fast40s1; timeout 70 $B $S --set SEED=1 --runs 1 --label fast40-seed1 2>&1 | tail -1
el eager40s1 left=$(left); timeout $(left) $B $S --set SEED=1 --runs 1 --set COMPILE=False --label eager40-seed1 2>&1 | tail -1
el done; tar czf $OUT/logs.tgz -C $L .
