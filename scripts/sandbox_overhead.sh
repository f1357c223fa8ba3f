#!/bin/bash
# On the GPU machine, from the project root: build a corpus from the machine's own text, then
# scripts/sandbox_overhead.py (by hand / unsandboxed / sandboxed, one run each). Carried: .whl
# (pydantic's wheels, installed into the machine's Python so sandboxed runs see them too) and .gpu
# (Debian's bubblewrap and its libraries, unpacked with dpkg -x).
set -u
B=${1:-60}
python3 -m pip install -q --no-index --no-deps .whl/*.whl 2>&1 | tail -2
export PATH=$PWD/.gpu/bin:$PATH PYTHONPATH=$PWD PYTHONUNBUFFERED=1 AUTORESEARCH_CACHE=/tmp/ar-cache
SP=$(python3 -c 'import site; print(site.getsitepackages()[0])')
t0=$(date +%s)
python3 scripts/make_corpus.py "$SP:/usr/local/cuda/include:/usr/include:/usr/share" /tmp/corpus --train-mb "${TRAIN_MB:-200}" \
  --val-mb 110 --ext py,h,hpp,cuh,txt,md,rst --val-first > /tmp/prep.log 2>&1 \
  && python3 -m nanochat.prepare --profile h100 --data /tmp/corpus >> /tmp/prep.log 2>&1 || { tail -5 /tmp/prep.log; exit 1; }
echo "corpus ready in $(( $(date +%s) - t0 ))s: $(grep -o '[0-9,]* train tokens' /tmp/prep.log | tail -1)"
python3 scripts/sandbox_overhead.py --profile h100 --data /tmp/corpus --time-budget "$B" --only "${ONLY:-sandbox,unsafe,hand}"
