#!/usr/bin/env bash
# (scripts/perf/train_prev.py, "prev", was `git show c3b5c9f:nanochat/train.py`: the template before this session; deleted after.)
# Call 7 (session 2): bytecode cache and imports; variants (fused qkv, sigmoid soft-cap, batch 128);
# correctness at a fixed 40 steps: fast path (twice), plain eager bf16, eager fp32 reference.
set -u
L=/tmp/logs; mkdir -p $L
export PYTHONUNBUFFERED=1 AUTORESEARCH_CACHE=/tmp/ar-cache
SP=/opt/torch/.venv/lib/python3.12/site-packages; D=/tmp/evc
T0=$(date +%s); el() { echo "[t=$(( $(date +%s) - T0 ))s] $*"; }
left() { echo $(( ${1:-575} - $(date +%s) + T0 )); }
( python3 scripts/make_corpus.py $SP $D --train-mb 40 --val-mb 110 && python3 -m nanochat.prepare --profile h100 --data $D ) > $L/prepare.log 2>&1 &
PREP=$!
echo "PYTHONDONTWRITEBYTECODE=${PYTHONDONTWRITEBYTECODE-unset} python=$(which python3)"
IMP="import time;t=time.time();import torch, torch._dynamo, torch._inductor.compile_fx;print(f'{time.time()-t:.2f}s')"
for i in 1 2 3; do echo "imports with PYTHONPYCACHEPREFIX, run $i: $(env -u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=/tmp/pyc python3 -c "$IMP")"; done
python3 scripts/perf/make_variants.py /tmp/var > /dev/null
wait $PREP; el prepared; tail -1 $L/prepare.log
B="python3 -m nanochat.bench --profile h100 --data $D --log-dir $L"
for v in qkv sigcap qkv_sigcap; do el $v; timeout 100 $B --time-budget 10 --runs 1 --train /tmp/var/train_$v.py --label $v 2>&1 | tail -1; done
el b128; timeout 100 $B --time-budget 10 --runs 1 --train /tmp/var/train_qkv_sigcap.py --set DEVICE_BATCH_SIZE=128 --label qkv_sigcap_b128 2>&1 | tail -1
S="--time-budget 100000 --set MAX_STEPS=40"
el fast40; timeout 120 $B $S --runs 2 --label fast40 2>&1 | tail -3
el eager40; timeout 120 $B $S --runs 1 --set COMPILE=False --label eager40 2>&1 | tail -1
el fp32ref left=$(left); timeout $(left) $B $S --runs 1 --train /tmp/var/train_fp32.py --label fp32ref40 2>&1 | tail -1
el done; tar czf $OUT/logs.tgz -C $L .
