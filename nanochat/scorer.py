"""
The scorer: measures a handed-over model with the frozen metric, in a process train.py never touches.

A campaign runs it in its own sandbox after each training run, with the validation split (which no
training run can see) and the handoff the run left (nanochat/handoff.py): a graph of allowed tensor
operators and its weights. No code from train.py runs here. The causality probe and evaluate_bpb
(nanochat/prepare.py) call the forward; the loss is computed here from its logits.

    python -m nanochat.scorer HANDOFF_DIR     # $NANOCHAT_HARNESS: harness.json, $NANOCHAT_DATA: prepared data

It prints its verdict as one JSON line after RESULT_MARKER on stdout: status ok (val_bpb,
eval_seconds, causal_leak), invalid (the handoff is unusable or the model peeks at later tokens)
or nan (val_bpb is not finite).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from pathlib import Path

from nanochat.config import DATA_ENV, HARNESS_ENV, HarnessConfig, HarnessError

RESULT_MARKER = "SCORER-RESULT "


def _quiet_numbers(text: str) -> str:
    """An error raised while the model ran on validation tokens may quote values derived from
    them (an index, say); the agent reads this message, so numbers are masked."""
    return re.sub(r"\d+", "N", text)[:400]


def score(handoff: Path, data, config: HarnessConfig) -> dict:
    """The verdict on one handoff: {'status': 'ok', 'val_bpb', 'eval_seconds', 'causal_leak'} or
    {'status': 'invalid' | 'nan', 'error'}."""
    import torch
    from nanochat.handoff import HandoffError, load_forward
    from nanochat.prepare import CAUSAL_TOLERANCE, check_causal, evaluate_bpb
    profile = config.resolved_profile()
    t0 = time.time()
    try:
        forward = load_forward(handoff, profile.device)
    except HandoffError as e:
        return {"status": "invalid", "error": str(e)}
    args = (data, profile.seq_len, profile.eval_batch_size, profile.device)
    try:
        leak = check_causal(forward, *args)
        if not leak <= CAUSAL_TOLERANCE:
            return {"status": "invalid", "error": f"the model's predictions depend on later tokens, or on the other "
                                                  f"rows of the batch (logits moved by {leak:.3g} of their scale "
                                                  f"when only those changed): it must be causal and deterministic"}
        val_bpb = evaluate_bpb(forward, *args)
    except torch.OutOfMemoryError:
        return {"status": "invalid", "error": "the model ran out of GPU memory while being scored"}
    except (HandoffError, HarnessError) as e:
        return {"status": "invalid", "error": str(e)}
    except Exception as e:   # the graph's operators failed on real inputs (shapes, dtypes, ...)
        return {"status": "invalid", "error": f"the model's forward failed on validation tokens: "
                                              f"{type(e).__name__}: {_quiet_numbers(str(e))}"}
    if not math.isfinite(val_bpb):
        return {"status": "nan", "error": "val_bpb is not finite"}
    return {"status": "ok", "val_bpb": round(val_bpb, 6), "eval_seconds": round(time.time() - t0, 1),
            "causal_leak": float(f"{leak:.3g}")}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m nanochat.scorer HANDOFF_DIR  ($NANOCHAT_HARNESS, $NANOCHAT_DATA)", file=sys.stderr)
        return 2
    from nanochat.prepare import load_data
    try:
        config = HarnessConfig.read(Path(os.environ[HARNESS_ENV]))
        data = load_data(Path(os.environ[DATA_ENV]))
    except (KeyError, HarnessError) as e:
        print(f"scorer: no harness or data: {e}", file=sys.stderr)
        return 2
    result = score(Path(argv[0]), data, config)
    print(RESULT_MARKER + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
