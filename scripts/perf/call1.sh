#!/usr/bin/env bash
# Call 1: probe + corpus, candidate (flex, flash) cold/warm, kernel profile, baseline.
set -u
L=/tmp/logs; mkdir -p $L
export PYTHONUNBUFFERED=1 AUTORESEARCH_CACHE=/tmp/ar-cache
SP=/opt/torch/.venv/lib/python3.12/site-packages
D=/tmp/evc
T0=$(date +%s); el() { echo "[t=$(( $(date +%s) - T0 ))s] $*"; }
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv
( python3 scripts/make_corpus.py $SP $D --train-mb 40 --val-mb 110 && /usr/bin/time -v python3 -m nanochat.prepare --profile h100 --data $D ) > $L/prepare.log 2>&1 &
PREP=$!
#el probe; timeout 200 python3 scripts/perf_probe.py > $L/probe.log 2>&1; echo "probe rc=$?"; grep -v PROBE_JSON $L/probe.log | tail -45
wait $PREP; el prepared; grep -E "make_corpus|prepare\]|Elapsed|Maximum res" $L/prepare.log
B="python3 -m nanochat.bench --profile h100 --data $D --time-budget 20 --log-dir $L"
el flex; timeout 200 $B --runs 2 --cold --label flex 2>&1 | tail -4
el flash; timeout 130 $B --runs 1 --set 'ATTENTION="flash"' --label flash 2>&1 | tail -3
el kprof; mkdir -p /tmp/kp && cp nanochat/train.py /tmp/kp/ && python3 -c "from nanochat.prepare import HarnessConfig; HarnessConfig(profile='h100', data='$D', time_budget=12).write('/tmp/kp/harness.json')"
timeout 100 python3 scripts/kernel_profile.py /tmp/kp --top 45 --out $L/kprof_flex.json > $L/kprof_flex.log 2>&1; tail -47 $L/kprof_flex.log
left=$(( 575 - $(date +%s) + T0 )); el base left=$left; [ $left -gt 60 ] && timeout $left $B --runs 1 --train scripts/perf/train_base.py --label base 2>&1 | tail -3
el done
tar czf $OUT/logs.tgz -C $L .
