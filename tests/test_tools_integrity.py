"""tools/integrity.py: the static check that keeps train.py from forging the metric."""

import pytest

from helpers_tools import SAMPLE_TRAIN
from tools.integrity import check_source

CLEAN = '''
import gc
import os
import sys
import time
import torch
from nanochat.prepare import load_harness

H = load_harness()
gc.collect()
gc.freeze()
gc.disable()
loader = H.train_loader(8, seed=0)
x, y = next(loader)
x[:, 0] = H.bos_id                  # the batch is the model's to change
model = torch.compile(torch.nn.Linear(4, 4))
print(f"step 1 | loss {1.0:.4f} | {sys.argv[0]} {os.getpid()} {time.time()}")
H.finish(model, num_steps=1)
'''


def test_clean_sources_pass():
    assert check_source(CLEAN) == []
    assert check_source(SAMPLE_TRAIN) == []


@pytest.mark.parametrize("line,rule", [
    ('print("val_bpb: 0.91")', "val_bpb:"),
    ('print(f"val_bpb:{x}")', "val_bpb:"),
    ("H.evaluate_bpb = lambda model: 0.5", "assignment to H.evaluate_bpb"),
    ("H.finish = print", "assignment to H.finish"),
    ("H.data.token_bytes[:] = 1", "assignment to H.data.token_bytes[:]"),
    ("setattr(type(H), 'evaluate' + '_bpb', lambda self, m: 0.01)", "setattr(type(H), ...)"),
    ("import nanochat.prepare as P\nP.Harness.finish = None", "assignment to P.Harness.finish"),
    ("from nanochat.prepare import Harness\ndelattr(Harness, 'finish')", "delattr(Harness, ...)"),
])
def test_forgery_patterns_are_refused(line, rule):
    violations = check_source(CLEAN + line + "\n")
    assert violations, line
    assert any(rule in str(v) for v in violations), [str(v) for v in violations]
    assert all(v.reason for v in violations)


def test_violations_name_the_line():
    [v] = check_source("x = 1\n\nprint('val_bpb: 1')\n")
    assert v.line == 3 and str(v).startswith("line 3: ")
