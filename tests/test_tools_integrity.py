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
    ('p = os.environ["NANOCHAT_RESULT_FILE"]', "NANOCHAT_RESULT"),
    ('open(os.environ.get("NANOCHAT_RESULT_FILE"), "w")', "NANOCHAT_RESULT"),
    ("H.evaluate_bpb = lambda model: 0.5", "assignment to H.evaluate_bpb"),
    ("H.finish = print", "assignment to H.finish"),
    ("del H.fail", "assignment to H.fail"),
    ("ev = H\nev.score = 1", "assignment to ev.score"),
    ("import nanochat.prepare as P\nP.Harness.evaluate_bpb = None", "assignment to P.Harness.evaluate_bpb"),
    ("import nanochat.prepare\nnanochat.prepare.EVAL_TOKENS = 1", "assignment to nanochat.prepare.EVAL_TOKENS"),
    ("type(H).finish = None", "assignment to type(H).finish"),
    ("setattr(H, 'finish', None)", "setattr(H, ...)"),
    ("setattr(type(H), 'evaluate_bpb', f)", "setattr(type(H), ...)"),
    ("delattr(H, name)", "delattr(H, ...)"),
    ("vars(H)['finish'] = f", "assignment to vars(H)"),
    ("H.__dict__['finish'] = f", "assignment to H.__dict__"),
    ("from nanochat.prepare import _write_result", "from nanochat.prepare import _write_result"),
    ("from nanochat.prepare import RESULT_ENV", "from nanochat.prepare import RESULT_ENV"),
    ("import nanochat.prepare\nnanochat.prepare._write_result({'val_bpb': 0.1})", "nanochat.prepare._write_result"),
    ("import nanochat.prepare as P\np = P.RESULT_ENV", "P.RESULT_ENV"),
    ("k = H.__class__", "H.__class__"),
    ("import ctypes", "import ctypes"),
    ("import inspect", "import inspect"),
    ("import importlib.util", "import importlib.util"),
    ("from importlib import reload", "import importlib"),
    ("import builtins", "import builtins"),
    ("objs = gc.get_objects()", "gc.get_objects"),
    ("from gc import get_referrers", "from gc import get_referrers"),
    ("import gc as g", "import gc as g"),
    ("sys.modules['nanochat.prepare'] = fake", "sys.modules"),
    ("from sys import modules", "from sys import modules"),
    ("os._exit(0)", "os._exit"),
    ("f.__code__ = g.__code__", "__code__"),
    ("c = getattr(f, '__code__')", "string '__code__'"),
    ("g = H.finish.__globals__", "__globals__"),
    ("fr = sys._getframe(1)", "sys._getframe"),
    ("exec('print(1)')", "exec(...)"),
    ("eval('1')", "eval(...)"),
    ("__import__('ctypes')", "__import__(...)"),
])
def test_forgery_patterns_are_refused(line, rule):
    violations = check_source(CLEAN + line + "\n")
    assert violations, line
    assert any(rule in str(v) for v in violations), [str(v) for v in violations]
    assert all(v.reason for v in violations)


def test_violations_name_the_line():
    [v] = check_source("x = 1\n\nprint('val_bpb: 1')\n")
    assert v.line == 3 and str(v).startswith("line 3: ")
