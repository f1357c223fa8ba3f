"""Time the harness's end of run piece by piece: run WORKDIR/train.py (short budget), then instead of
finish(): check_causal (compiles the inference graph), evaluate_bpb, evaluate_bpb again (no compile)."""
import os, runpy, sys, time
import torch
from nanochat import prepare

os.chdir(sys.argv[1]); sys.path.insert(0, os.getcwd()); sys.argv = ["train.py"]

def timed_finish(self, model, **stats):
    model.eval()
    out = {}
    for name, fn in [("check_causal (+compile)", lambda: prepare.check_causal(model, self.data, self.seq_len, self.profile.eval_batch_size, self.device)),
                     ("evaluate_bpb #1", lambda: self.evaluate_bpb(model)),
                     ("evaluate_bpb #2", lambda: self.evaluate_bpb(model))]:
        torch.cuda.synchronize(); t = time.time(); v = fn(); torch.cuda.synchronize()
        out[name] = (round(time.time() - t, 2), v)
    print("[eval_timing]", out, flush=True)
    os._exit(0)

prepare.Harness.finish = timed_finish
runpy.run_path("train.py", run_name="__main__")
