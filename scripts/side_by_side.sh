#!/bin/bash
# The template against other train.py files on one GPU machine, as docs/PERFORMANCE.md measures it:
# same corpus (built from the machine's own text), tokenizer, validation rows and metric; seeds 1..N.
#
#   bash scripts/side_by_side.sh BUDGET SEEDS FILE...     e.g.  bash scripts/side_by_side.sh 100 3 anchor.py
#
# With one GPU, one `nanochat.bench` runs every file, interleaved. With several, each file gets its own
# GPU (the template GPU 0, the next file GPU 1, ...) and they run at once; check that the GPUs step
# alike by running one file on two of them. A file that seeds itself with a literal 42 (autoresearch's
# train.py does) is given the harness's seed: `manual_seed(42)` and `seed=42)` become H.seed.
# Env: TRAIN_MB (default 300) sizes the corpus; OUT (default /tmp/side-by-side) receives the output.
set -u
BUDGET=${1:?budget in seconds}; SEEDS=${2:?seeds}; shift 2
OUT=${OUT:-/tmp/side-by-side}; CORPUS=/tmp/side-by-side-corpus
mkdir -p "$OUT/files"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ ! -f $CORPUS/.ready ]; then
  SP=$(python3 -c 'import site; print(site.getsitepackages()[0])')
  python3 scripts/make_corpus.py "$SP:/usr/local/cuda/include:/usr/include:/usr/share" $CORPUS --train-mb "${TRAIN_MB:-300}" \
    --val-mb 110 --ext py,h,hpp,cuh,txt,md,rst --val-first > "$OUT/prepare.log" 2>&1 \
    && python3 -m nanochat.prepare --profile h100 --data $CORPUS >> "$OUT/prepare.log" 2>&1 \
    && touch $CORPUS/.ready || { tail -5 "$OUT/prepare.log"; exit 1; }
fi
FILES=(nanochat/train.py)
for f in "$@"; do
  FILES+=("$OUT/files/$(basename "$f")")
  sed -e 's/manual_seed(42)/manual_seed(H.seed)/g' -e 's/seed=42)/seed=H.seed)/g' "$f" > "${FILES[-1]}"
done
BENCH=(python3 -m nanochat.bench --profile h100 --data $CORPUS --time-budget "$BUDGET" --seeds "$SEEDS")
GPUS=$(nvidia-smi -L | wc -l)
if [ "$GPUS" -lt "${#FILES[@]}" ]; then
  "${BENCH[@]}" --log-dir "$OUT/logs" $(printf -- '--train %s ' "${FILES[@]}") 2>&1 | tee "$OUT/bench.txt" | grep -v '^{'
else
  for i in "${!FILES[@]}"; do
    CUDA_VISIBLE_DEVICES=$i "${BENCH[@]}" --log-dir "$OUT/logs$i" --train "${FILES[$i]}" > "$OUT/bench$i.txt" 2>&1 &
  done
  wait
  for i in "${!FILES[@]}"; do echo "== GPU $i"; grep -v '^{' "$OUT/bench$i.txt" | sed '/^mean/,$d'; done
  python3 - "$OUT" "${#FILES[@]}" <<'PY'   # one comparison over every GPU's runs
import json, sys
from pathlib import Path
from nanochat.bench import compare, print_comparison
rows = [json.loads(l) for i in range(int(sys.argv[2]))
        for l in (Path(sys.argv[1]) / f"bench{i}.txt").read_text().splitlines() if l.startswith("{")]
print_comparison(compare(rows, list(dict.fromkeys(r["label"] for r in rows))))
PY
fi
