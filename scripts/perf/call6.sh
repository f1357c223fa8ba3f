#!/usr/bin/env bash
# (scripts/perf/train_prev.py, "prev", was `git show c3b5c9f:nanochat/train.py`: the template before this session; deleted after.)
# Call 6 (session 2): regional compile + bf16 residual + full-context default, with prestart.
# Env probe, gradient numerics probe, bench new (cold+warm), new with SSSL, previous template, kernel profile.
set -u
L=$OUT/logs; mkdir -p $L
export PYTHONUNBUFFERED=1 AUTORESEARCH_CACHE=/tmp/ar-cache
SP=/opt/torch/.venv/lib/python3.12/site-packages; D=/tmp/evc
T0=$(date +%s); el() { echo "[t=$(( $(date +%s) - T0 ))s] $*"; }
left() { echo $(( ${1:-580} - $(date +%s) + T0 )); }
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu,driver_version --format=csv,noheader
( python3 scripts/make_corpus.py $SP $D --train-mb 40 --val-mb 110 && python3 -m nanochat.prepare --profile h100 --data $D ) > $L/prepare.log 2>&1 &
PREP=$!
el env; python3 - <<'PY'
import os, sys, time, importlib.util
t = time.time(); import torch; a = time.time() - t
t = time.time(); import torch._dynamo, torch._inductor.compile_fx; b = time.time() - t
d = os.path.dirname(torch.__file__)
print(f"import torch {a:.2f}s, dynamo+inductor {b:.2f}s; torch dir writable {os.access(d, os.W_OK)}, "
      f"__pycache__ exists {os.path.isdir(os.path.join(d, '__pycache__'))}, cpu {os.cpu_count()}, py {sys.version.split()[0]}, torch {torch.__version__}")
PY
python3 -c "import time;t=time.time();import torch, torch._dynamo, torch._inductor.compile_fx;print(f'second process: imports {time.time()-t:.2f}s')"
wait $PREP; el prepared; tail -2 $L/prepare.log
el grad_probe; timeout 150 python3 scripts/perf/grad_probe.py --profile h100 --data $D --rows 8 --out $L/grad_probe.json > $L/grad_probe.log 2>&1; echo "rc=$?"; grep -v Warning $L/grad_probe.log | tail -42
B="python3 -m nanochat.bench --profile h100 --data $D --log-dir $L"
el new; timeout 240 $B --time-budget 20 --runs 2 --cold --label new 2>&1 | tail -4
el kprof; mkdir -p /tmp/kp && cp nanochat/train.py /tmp/kp/ && python3 -c "from nanochat.prepare import HarnessConfig; HarnessConfig(profile='h100', data='$D', time_budget=10).write('/tmp/kp/harness.json')"
timeout 100 python3 scripts/kernel_profile.py /tmp/kp --top 40 --out $L/kprof_new.json > $L/kprof_new.log 2>&1; tail -42 $L/kprof_new.log
el sssl left=$(left); [ $(left) -gt 90 ] && timeout $(left) $B --time-budget 15 --runs 1 --set 'WINDOW_PATTERN="SSSL"' --label new-sssl 2>&1 | tail -3
el prev left=$(left); [ $(left) -gt 100 ] && timeout $(left) $B --time-budget 15 --runs 1 --no-prestart --train scripts/perf/train_prev.py --label prev 2>&1 | tail -3
el done
