#!/usr/bin/env bash
# Call 2: flex tile sweep, startup/eval breakdowns, candidate 2 (fused CE, 1 untimed step) cold/warm, tuned flex, kernel profile.
set -u
L=/tmp/logs; mkdir -p $L
export PYTHONUNBUFFERED=1 AUTORESEARCH_CACHE=/tmp/ar-cache
SP=/opt/torch/.venv/lib/python3.12/site-packages; D=/tmp/evc
T0=$(date +%s); el() { echo "[t=$(( $(date +%s) - T0 ))s] $*"; }
( python3 scripts/make_corpus.py $SP $D --train-mb 40 --val-mb 110 && python3 -m nanochat.prepare --profile h100 --data $D ) > $L/prepare.log 2>&1 &
PREP=$!
el sweep; timeout 220 python3 scripts/perf/flex_sweep.py /tmp/flex_best.txt > $L/flex_sweep.log 2>&1; tail -17 $L/flex_sweep.log
BEST=$(cat /tmp/flex_best.txt 2>/dev/null || echo None); echo "BEST=$BEST"
wait $PREP; el prepared; tail -2 $L/prepare.log
mk() { mkdir -p $1; python3 -c "
from nanochat.bench import override_constants; from nanochat.prepare import HarnessConfig; import sys
open('$1/train.py','w').write(override_constants(open('nanochat/train.py').read(), {'FLEX_KERNEL_OPTIONS': sys.argv[1]}))
HarnessConfig(profile='h100', data='$D', time_budget=$2).write('$1/harness.json')" "$BEST"; }
mk /tmp/kp 12; mk /tmp/et 5
el startup; NANOCHAT_HARNESS=/tmp/kp/harness.json python3 scripts/perf/startup_probe.py 2>&1 | tail -16
B="python3 -m nanochat.bench --profile h100 --data $D --time-budget 20 --log-dir $L"
el cand2; timeout 200 $B --runs 2 --cold --label cand2 2>&1 | tail -4
[ "$BEST" != "None" ] && { el tuned; timeout 120 $B --runs 1 --set "FLEX_KERNEL_OPTIONS=$BEST" --label tuned 2>&1 | tail -3; }
el evaltiming; (cd /tmp/et && timeout 100 python3 $OLDPWD/scripts/perf/eval_timing.py /tmp/et 2>&1 | grep -E "eval_timing|budget|Error" )
el kprof; timeout 90 python3 scripts/kernel_profile.py /tmp/kp --skip-batches 8 --top 30 --out $L/kprof.json > $L/kprof.log 2>&1; tail -32 $L/kprof.log
el importtime; cd /tmp/kp && python3 -X importtime -c "import torch, nanochat.prepare; from torch.nn.attention.flex_attention import flex_attention; import torch._dynamo, torch._inductor.compile_fx" 2> $L/importtime.txt; cd - >/dev/null
sort -t'|' -k2 -n -r $L/importtime.txt | head -12
el done; tar czf $OUT/logs.tgz -C $L .
